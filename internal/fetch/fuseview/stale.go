package fuseview

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// DetachUnder lazily unmounts every FUSE mount below dir (views an
// earlier sgnode left) and returns their mount points. It learns them
// from /proc/self/mountinfo and never touches the mounts themselves: a
// stat of a view whose server is gone, but whose connection some process
// still holds, would wait for good.
func DetachUnder(dir string) ([]string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	points, err := fuseMountsUnder(f, abs)
	if err != nil {
		return nil, err
	}
	var detached []string
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
			return detached, fmt.Errorf("detach %s: %w", p, err)
		}
		detached = append(detached, p)
	}
	return detached, nil
}

// fuseMountsUnder reads mountinfo lines (proc(5)) and returns the mount
// points of FUSE file systems strictly below dir.
func fuseMountsUnder(r io.Reader, dir string) ([]string, error) {
	var points []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(fields) {
			continue
		}
		fstype := fields[sep+1]
		if fstype != "fuse" && !strings.HasPrefix(fstype, "fuse.") {
			continue
		}
		point := unescapeMountinfo(fields[4])
		if strings.HasPrefix(point, dir+"/") {
			points = append(points, point)
		}
	}
	return points, sc.Err()
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in a mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
