package main

import (
	"net"
	"os"
)

// notifyReady tells systemd that the service is up (sd_notify READY=1),
// for a Type=notify unit: it writes to the datagram socket in
// $NOTIFY_SOCKET. Without one (not under systemd) it does nothing. The
// protocol is one datagram, so it needs no library.
func notifyReady() error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' { // an abstract socket
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte("READY=1\nSTATUS=serving\n"))
	return err
}
