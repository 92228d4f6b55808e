package logging

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// stuckOutput is an output whose writes block until it is let go, as a
// pipe nobody drains; it tells of each write as it begins.
type stuckOutput struct {
	begun chan string
	let   chan struct{}
	mu    sync.Mutex
	lines []string
}

func (o *stuckOutput) Write(p []byte) (int, error) {
	o.begun <- string(p)
	<-o.let
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lines = append(o.lines, string(p))
	return len(p), nil
}

// TestWriterNeverBlocks: with the output stuck, writes return at once; those
// that find the queue full are dropped and counted; Flush gives up after
// its bound; once the output moves, the queued lines come out in order.
func TestWriterNeverBlocks(t *testing.T) {
	out := &stuckOutput{begun: make(chan string, 100), let: make(chan struct{})}
	w := NewWriter(out, 4)
	w.Write([]byte("line 0\n"))
	if got := <-out.begun; got != "line 0\n" {
		t.Fatalf("first write %q", got)
	}
	// The drain is stuck on line 0: four lines fit the queue, the rest go.
	start := time.Now()
	for i := 1; i <= 10; i++ {
		line := fmt.Appendf(nil, "line %d\n", i)
		if n, err := w.Write(line); n != len(line) || err != nil {
			t.Errorf("Write = %d, %v; want %d, nil", n, err, len(line))
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("10 writes to a stuck output took %s", took)
	}
	if d := w.Dropped(); d != 6 {
		t.Errorf("dropped %d, want 6", d)
	}
	start = time.Now()
	if w.Flush(100 * time.Millisecond) {
		t.Error("Flush reports the lines written while the output is stuck")
	}
	if took := time.Since(start); took < 100*time.Millisecond || took > 5*time.Second {
		t.Errorf("Flush with a stuck output returned after %s, want its bound, 100ms", took)
	}

	close(out.let)
	if !w.Flush(10 * time.Second) {
		t.Fatal("Flush failed once the output moved")
	}
	want := []string{"line 0\n", "line 1\n", "line 2\n", "line 3\n", "line 4\n"}
	out.mu.Lock()
	defer out.mu.Unlock()
	if !slices.Equal(out.lines, want) {
		t.Errorf("wrote %q, want %q", out.lines, want)
	}
	if d := w.Dropped(); d != 6 {
		t.Errorf("dropped %d after the flush, want still 6", d)
	}
}

type failingOutput struct{}

func (failingOutput) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// TestWriterCountsRefused: a line the output refuses counts as dropped.
func TestWriterCountsRefused(t *testing.T) {
	w := NewWriter(failingOutput{}, 4)
	w.Write([]byte("a\n"))
	w.Write([]byte("b\n"))
	if !w.Flush(10 * time.Second) {
		t.Fatal("Flush failed")
	}
	if d := w.Dropped(); d != 2 {
		t.Errorf("dropped %d, want 2", d)
	}
}

// TestLoggerThroughWriter: a logger over a Writer writes one line a record.
func TestLoggerThroughWriter(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			out := &stuckOutput{begun: make(chan string, 10), let: make(chan struct{})}
			close(out.let)
			w := NewWriter(out, 4)
			log := New(w, format, "info")
			log.Info("one", "k", 1)
			log.Debug("hidden")
			log.Warn("two")
			if !w.Flush(10 * time.Second) {
				t.Fatal("Flush failed")
			}
			if len(out.lines) != 2 {
				t.Errorf("wrote %q, want two lines", out.lines)
			}
		})
	}
}
