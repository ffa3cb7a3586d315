package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sgrelay/sg/internal/daemon"
	"github.com/sgrelay/sg/internal/node"
)

func cmdInit(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sgnode init", flag.ContinueOnError)
	data := fs.String("data", defaultDataDir(), "data directory")
	listenPort := fs.Int("port", 4100, "UDP port for the default listen address")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if err := os.MkdirAll(*data, 0o700); err != nil {
		return err
	}
	cfg := daemon.DefaultConfig(*data)
	key, created, err := node.LoadOrCreateIdentity(cfg.IdentityPath())
	if err != nil {
		return err
	}
	id, _ := node.PeerID(key)
	cfgPath := filepath.Join(*data, "sgnode.toml")
	wrote, err := writeIfAbsent(cfgPath, replacePort(defaultConfigFile, *listenPort))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "data directory: %s\n", *data)
	fmt.Fprintf(stdout, "identity:       %s (%s)\n", cfg.IdentityPath(), map[bool]string{true: "new", false: "existing"}[created])
	fmt.Fprintf(stdout, "config:         %s (%s)\n", cfgPath, map[bool]string{true: "new", false: "existing, left as is"}[wrote])
	fmt.Fprintf(stdout, "peer ID:        %s\n\n", id)
	fmt.Fprintf(stdout, "Add this node to every member's peers file (one line per address), e.g.:\n")
	fmt.Fprintf(stdout, "  /ip4/<this-host-ip>/udp/%d/quic-v1/p2p/%s\n", *listenPort, id)
	return nil
}

func replacePort(s string, port int) string {
	if port == 4100 {
		return s
	}
	return strings.ReplaceAll(s, "/udp/4100/", fmt.Sprintf("/udp/%d/", port))
}

func writeIfAbsent(path, content string) (bool, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return false, err
	}
	return true, f.Close()
}

func cmdID(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sgnode id", flag.ContinueOnError)
	data := fs.String("data", defaultDataDir(), "data directory")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	key, err := node.LoadIdentity(daemon.DefaultConfig(*data).IdentityPath())
	if err != nil {
		return fmt.Errorf("%w (run 'sgnode init --data %s' first)", err, *data)
	}
	id, err := node.PeerID(key)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, id)
	return nil
}

func defaultDataDir() string {
	if d := os.Getenv("SG_DATA"); d != "" {
		return d
	}
	return "/var/lib/sg"
}

func usageErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return fmt.Errorf("%w: %v", errUsage, err)
}
