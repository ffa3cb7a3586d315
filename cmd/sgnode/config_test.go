package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sgrelay/sg/internal/daemon"
	"github.com/sgrelay/sg/internal/fetch"
)

func writeConfig(t testing.TB, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sgnode.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultConfigFileBuilds(t *testing.T) {
	fc, err := readFileConfig(writeConfig(t, defaultConfigFile), false)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := buildConfig(t.TempDir(), fc)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.QEMU.Sandbox != daemon.SandboxRequire {
		t.Fatalf("qemu_sandbox of the default file: %q", cfg.QEMU.Sandbox)
	}
	if cfg.Store.MemoryBudget != 1<<30 || len(cfg.Node.Listen) != 1 {
		t.Fatalf("defaults not applied: %+v", cfg.Store)
	}
	if n := cfg.Node; n.MaxIncomingPerPeer != fetch.DefaultPerSource || n.MaxIncomingBytesPerPeer != fetch.DefaultPerSourceBytes || n.MaxIncomingPositions != fetch.DefaultMaxPositions {
		t.Fatalf("incoming caps of the default file: %d open, %d bytes, %d positions; want the fetch defaults", n.MaxIncomingPerPeer, n.MaxIncomingBytesPerPeer, n.MaxIncomingPositions)
	}
}

func TestPushQuotaAsShareOrSize(t *testing.T) {
	for text, want := range map[string]int64{
		"mem_budget = \"1GiB\"\ndisk_budget = \"3GiB\"\npush_quota = \"25%\"\n": 1 << 30,
		"push_quota = \"64MiB\"\n": 64 << 20,
		"push_quota = \"off\"\n":   -1,
		"":                         0, // the node's default share
	} {
		fc, err := readFileConfig(writeConfig(t, text), false)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := buildConfig(t.TempDir(), fc)
		if err != nil || cfg.Node.PushQuota != want {
			t.Errorf("%q: quota %d, %v; want %d", text, cfg.Node.PushQuota, err, want)
		}
	}
}

func TestBadConfigNamesTheKey(t *testing.T) {
	cases := map[string]string{
		"mem_bugdet = \"1GiB\"\n":               "mem_bugdet",
		"mem_budget = \"lots\"\n":               "mem_budget",
		"ingest_rate = \"fast\"\n":              "ingest_rate",
		"uplink = \"quick\"\n":                  "uplink",
		"downlink = \"-5Gbit\"\n":               "downlink",
		"allow = [\"not-a-peer\"]\n":            "allow",
		"peers_file = \"/nonexistent/peers\"\n": "peers_file",
		"log_level = \"chatty\"\n":              "log_level",
		"push_quota = \"150%\"\n":               "push_quota",
		"push_quota = \"some\"\n":               "push_quota",
		"qemu_resume = \"yes\"\n":               "qemu_resume",
		"hold_lease = \"-1h\"\n":                "hold_lease",
		"hold_lease = \"forever\"\n":            "hold_lease",
		"qemu_sandbox = \"off\"\n":              "qemu_sandbox",
	}
	for text, key := range cases {
		t.Run(key, func(t *testing.T) {
			fc, err := readFileConfig(writeConfig(t, text), false)
			if err == nil {
				var cfg daemon.Config
				if cfg, err = buildConfig(t.TempDir(), fc); err == nil {
					err = cfg.Validate()
				}
			}
			if err == nil && key == "log_level" {
				_, err = newLogger(os.Stderr, fc.LogLevel, fc.LogFormat)
			}
			if err == nil || !strings.Contains(err.Error(), key) {
				t.Fatalf("error %v does not name %q", err, key)
			}
		})
	}
}

// FuzzConfigFile: any bytes in sgnode.toml give a config or an error,
// never a panic.
func FuzzConfigFile(f *testing.F) {
	f.Add(defaultConfigFile)
	f.Add("listen = [\"/ip4/127.0.0.1/udp/0/quic-v1\"]\nmem_budget = \"64MiB\"\n")
	f.Add("allow = [\"12D3KooWNVPVTknXe1egBzKb8Pp4Fnr8inWAvzus9H5Zf7zrGFgS\"]\ningest_rate = \"1Gbit\"\n")
	f.Add("[[x]]\n")
	f.Fuzz(func(t *testing.T, text string) {
		p := filepath.Join(t.TempDir(), "sgnode.toml")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		fc, err := readFileConfig(p, false)
		if err != nil {
			return
		}
		if cfg, err := buildConfig(t.TempDir(), fc); err == nil {
			_ = cfg.Validate()
		}
	})
}
