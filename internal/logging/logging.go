// Package logging builds lockex's one logger: tint's readable lines for
// people (coloured only on a terminal) or JSON lines for machines, written
// through a Writer that never blocks its caller.
package logging

import (
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/lmittmann/tint"
)

// New returns a logger writing format ("text" or "json") at level ("debug",
// "info", "warn", "error") to w, which should be a Writer.
func New(w io.Writer, format, level string) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		lvl = slog.LevelInfo
	}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl}))
	}
	return slog.New(tint.NewHandler(w, &tint.Options{
		Level:      lvl,
		TimeFormat: time.TimeOnly + ".000",
		NoColor:    !isTerminal(w),
	}))
}

// isTerminal reports whether w, or the output of Writer w, is a terminal
// (TCGETS succeeds on it).
func isTerminal(w io.Writer) bool {
	if lw, ok := w.(*Writer); ok {
		w = lw.out
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}
