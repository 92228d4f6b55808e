package config

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Duration is a time.Duration that also accepts plain seconds ("1.5"), as
// flock -w and the original lockex's -t did. It is a flag value and an
// encoding.TextUnmarshaler, so flags and environment parse it the same way.
type Duration time.Duration

// NoLimit is the LockTimeout that waits for ever. --locktimeout means one
// thing everywhere: NoLimit waits for ever, 0 looks once (as flock -w 0 is
// flock -n), more gives up after that long.
const NoLimit = Duration(-1)

func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if secs < 0 || secs > float64(1<<62)/float64(time.Second) || secs != secs {
			return 0, fmt.Errorf("%q is not a duration (negative or too large)", s)
		}
		return Duration(secs * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration (want seconds like 1.5 or a duration like 1500ms)", s)
	}
	return Duration(d), nil
}

func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string {
	if d == NoLimit {
		return "none"
	}
	return time.Duration(d).String()
}

func (d *Duration) Set(s string) (err error) { *d, err = ParseDuration(s); return err }
func (d *Duration) Type() string             { return "duration" }
func (d *Duration) UnmarshalText(b []byte) error {
	return d.Set(string(b))
}

// Signal is a signal named in --kill-signal: TERM, SIGTERM or its number.
type Signal syscall.Signal

var signalNames = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
	"KILL": syscall.SIGKILL, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
	"TERM": syscall.SIGTERM,
}

func ParseSignal(s string) (Signal, error) {
	name := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "SIG")
	if sig, ok := signalNames[name]; ok {
		return Signal(sig), nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		for _, sig := range signalNames {
			if int(sig) == n {
				return Signal(sig), nil
			}
		}
	}
	return 0, fmt.Errorf("%q is not a signal lockex sends (want TERM, INT, HUP, QUIT, USR1, USR2 or KILL)", s)
}

func (s Signal) Sys() syscall.Signal { return syscall.Signal(s) }

func (s Signal) String() string {
	for name, sig := range signalNames {
		if sig == syscall.Signal(s) {
			return name
		}
	}
	return strconv.Itoa(int(s))
}

func (s *Signal) Set(v string) (err error) { *s, err = ParseSignal(v); return err }
func (s *Signal) Type() string             { return "signal" }
func (s *Signal) UnmarshalText(b []byte) error {
	return s.Set(string(b))
}
