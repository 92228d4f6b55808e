package activecheck

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string // nil: refused
		err  string   // in the error
	}{
		{"check-health", []string{"check-health"}, ""},
		{"  curl  -fsS\thttp://127.0.0.1:8080/health?full=1 ", []string{"curl", "-fsS", "http://127.0.0.1:8080/health?full=1"}, ""},
		{`sh -c 'curl -fs localhost:8080/health || exit 1'`, []string{"sh", "-c", "curl -fs localhost:8080/health || exit 1"}, ""},
		{`grep -q "ok now" /tmp/state`, []string{"grep", "-q", "ok now", "/tmp/state"}, ""},
		{`echo "say \"hi\"" a\ b ''`, []string{"echo", `say "hi"`, "a b", ""}, ""},
		{`sh -c 'echo $HOME'`, []string{"sh", "-c", "echo $HOME"}, ""},
		{`it's`, nil, "unterminated ' quote"},
		{`say "hi`, nil, `unterminated " quote`},
		{`trailing\`, nil, "backslash"},
		{"", nil, "no command"},
		{"   ", nil, "no command"},
		{"curl -f x || exit 1", nil, "'|' is shell syntax"},
		{"check; true", nil, "';' is shell syntax"},
		{"echo $HOME", nil, "'$' is shell syntax"},
		{`echo "$HOME"`, nil, "single quotes"},
		{"check > /dev/null", nil, "'>' is shell syntax"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseCommand(tc.in)
			switch {
			case tc.want == nil && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("%q: %q, %v; want an error with %q", tc.in, got, err, tc.err)
			case tc.want == nil && !strings.Contains(err.Error(), strconv.Quote(tc.in)):
				t.Fatalf("%q: %v does not name the value", tc.in, err)
			case tc.want != nil && (err != nil || !slices.Equal(got, tc.want)):
				t.Fatalf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
			}
			if tc.want != nil {
				back, err := ParseCommand(JoinCommand(got))
				if err != nil || !slices.Equal(back, got) {
					t.Errorf("JoinCommand(%q) = %s reads back as %q, %v", got, JoinCommand(got), back, err)
				}
			}
		})
	}
}

// TestCommandProbe: exit 0 passes; another code fails, naming the command,
// the code and what it said; the runner's own error is the check's.
func TestCommandProbe(t *testing.T) {
	type answer struct {
		code int
		out  string
		err  error
	}
	var next answer
	var gotArgv []string
	p := Command([]string{"check", "it's up"}, func(_ context.Context, argv []string) (int, []byte, error) {
		gotArgv = argv
		return next.code, []byte(next.out), next.err
	})
	if s := p.String(); s != `exec check 'it'\''s up'` {
		t.Errorf("String() = %s", s)
	}
	next = answer{0, "fine\n", nil}
	if err := p.Check(context.Background()); err != nil || !slices.Equal(gotArgv, []string{"check", "it's up"}) {
		t.Errorf("exit 0: %v (argv %q)", err, gotArgv)
	}
	next = answer{3, "db unreachable:\n  connection refused\n", nil}
	err := p.Check(context.Background())
	if err == nil || err.Error() != `exec check 'it'\''s up': exit 3: db unreachable: connection refused` {
		t.Errorf("exit 3: %v", err)
	}
	boom := errors.New("command not found: check")
	next = answer{0, "", boom}
	if err := p.Check(context.Background()); !errors.Is(err, boom) {
		t.Errorf("runner failed: %v, want its error", err)
	}
}

// scripted is a probe that answers from a list, then passes.
type scripted struct{ answers chan error }

func (s scripted) Check(context.Context) error {
	select {
	case err := <-s.answers:
		return err
	default:
		return nil
	}
}
func (scripted) String() string { return "scripted" }

// TestCheckerCountsFailures: Failures counts consecutive failures and a
// pass resets it; with a start period, failures before the first pass are
// not counted while it lasts, and every one after a pass is.
func TestCheckerCountsFailures(t *testing.T) {
	fail := errors.New("no")
	run := func(t *testing.T, cfg Config, answers ...error) []int {
		s := scripted{answers: make(chan error, len(answers))}
		for _, a := range answers {
			s.answers <- a
		}
		cfg.Probe, cfg.Period, cfg.Timeout, cfg.FailureThreshold = s, 5*time.Millisecond, time.Second, 3
		c := New(cfg)
		got := make(results, 100)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { c.Run(ctx, func(r Result) { got <- r }); close(done) }()
		defer func() { cancel(); <-done }()
		c.Running(7)
		var failures []int
		for range answers {
			failures = append(failures, got.next(t).Failures)
		}
		return failures
	}
	if got := run(t, Config{}, fail, fail, nil, fail, fail, fail, fail); !slices.Equal(got, []int{1, 2, 0, 1, 2, 3, 4}) {
		t.Errorf("no start period: failures %v", got)
	}
	// A start period longer than the test: failures before the first pass
	// are forgiven, those after it count.
	if got := run(t, Config{StartPeriod: time.Hour}, fail, fail, fail, nil, fail, fail); !slices.Equal(got, []int{0, 0, 0, 0, 1, 2}) {
		t.Errorf("within the start period: failures %v", got)
	}
}
