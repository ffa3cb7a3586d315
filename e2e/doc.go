// Package e2e holds end-to-end tests that run real sgnode and sgctl
// binaries on loopback (through package lab). TestMain builds the binaries
// once per run.
package e2e
