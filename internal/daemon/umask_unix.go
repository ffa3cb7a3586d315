package daemon

import "syscall"

// umask sets the process umask and returns the old one. The control socket
// is created under a tight umask so there is no moment at which another
// user could open it.
func umask(m int) int { return syscall.Umask(m) }
