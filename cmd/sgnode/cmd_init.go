package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sgrelay/sg/internal/cli"
	"github.com/sgrelay/sg/internal/daemon"
	"github.com/sgrelay/sg/internal/node"
)

const defaultPort = 4100

func newInitCmd(stdout io.Writer) *cobra.Command {
	var (
		data string
		port cli.Int
	)
	c := &cobra.Command{
		Use:   "init",
		Short: "Create the data directory, identity and a default config file",
		Long: `Create the data directory, this node's identity (an Ed25519 key) and a
commented sgnode.toml. What exists is left as is, so init is safe to run
again; it prints the peer ID and the address to give the other members.`,
		Example: "  sgnode init --data /var/lib/sg --port 4100",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return initData(stdout, data, port.V)
		},
	}
	c.Flags().StringVar(&data, "data", defaultDataDir(), "data `dir`ectory")
	cli.IntVar(c.Flags(), &port, "port", defaultPort, 1, 65535, "--port 4100", "UDP port of the default listen address")
	return c
}

// initData creates what 'sgnode run' needs in data and says what it found.
func initData(stdout io.Writer, data string, port int) error {
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	cfg := daemon.DefaultConfig(data)
	key, created, err := node.LoadOrCreateIdentity(cfg.IdentityPath())
	if err != nil {
		return err
	}
	id, _ := node.PeerID(key)
	cfgPath := filepath.Join(data, "sgnode.toml")
	wrote, err := writeIfAbsent(cfgPath, replacePort(defaultConfigFile, port))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "data directory: %s\n", data)
	fmt.Fprintf(stdout, "identity:       %s (%s)\n", cfg.IdentityPath(), map[bool]string{true: "new", false: "existing"}[created])
	fmt.Fprintf(stdout, "config:         %s (%s)\n", cfgPath, map[bool]string{true: "new", false: "existing, left as is"}[wrote])
	fmt.Fprintf(stdout, "peer ID:        %s\n\n", id)
	fmt.Fprintf(stdout, "Add this node to every member's peers file (one line per address), e.g.:\n")
	fmt.Fprintf(stdout, "  /ip4/<this-host-ip>/udp/%d/quic-v1/p2p/%s\n", port, id)
	return nil
}

func replacePort(s string, port int) string {
	if port == defaultPort {
		return s
	}
	return strings.ReplaceAll(s, fmt.Sprintf("/udp/%d/", defaultPort), fmt.Sprintf("/udp/%d/", port))
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

func newIDCmd(stdout io.Writer) *cobra.Command {
	var data string
	c := &cobra.Command{
		Use:   "id",
		Short: "Print this node's peer ID",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			key, err := loadIdentity(data)
			if err != nil {
				return err
			}
			id, err := node.PeerID(key)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, id)
			return nil
		},
	}
	c.Flags().StringVar(&data, "data", defaultDataDir(), "data `dir`ectory")
	return c
}
