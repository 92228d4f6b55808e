package logging

import (
	"bytes"
	"io"
	"sync/atomic"
	"time"
)

// QueueLines is how many log lines may wait for a slow stderr before
// further lines are dropped.
const QueueLines = 1024

// Writer stands between the logger and stderr so that logging never waits
// on stderr. lockex logs from the goroutines that signal its workload and
// release its lock; with stderr a pipe nobody drains (a stalled log
// collector, a blocking container log driver) a plain write would block
// them for good, and the workload would run on next to the next holder's.
//
// Each Write (one slog record, one line) is queued and written to the
// output by one goroutine, in order. A line that finds the queue full, or
// that the output refuses, is dropped and counted: losing a log line is
// better than missing a stop.
type Writer struct {
	out     io.Writer
	queue   chan entry
	dropped atomic.Uint64
}

// entry is a line to write, or a flush's marker.
type entry struct {
	line    []byte
	flushed chan struct{}
}

// NewWriter starts writing to out the lines given to the returned Writer,
// keeping at most queue of them waiting.
func NewWriter(out io.Writer, queue int) *Writer {
	w := &Writer{out: out, queue: make(chan entry, queue)}
	go w.drain()
	return w
}

// Write queues a copy of p, or drops it if the queue is full. It never
// blocks and never fails: slog has nobody to report a failed write to.
func (w *Writer) Write(p []byte) (int, error) {
	select {
	case w.queue <- entry{line: bytes.Clone(p)}:
	default:
		w.dropped.Add(1)
	}
	return len(p), nil
}

// Dropped is how many lines were dropped so far.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Flush waits until every line queued before it was written, or at most
// max, and reports whether they were. lockex calls it as it exits, so that
// its last lines are not lost to a fast exit, nor its exit to a stalled
// stderr.
func (w *Writer) Flush(max time.Duration) bool {
	timer := time.NewTimer(max)
	defer timer.Stop()
	flushed := make(chan struct{})
	select {
	case w.queue <- entry{flushed: flushed}:
	case <-timer.C:
		return false
	}
	select {
	case <-flushed:
		return true
	case <-timer.C:
		return false
	}
}

// drain writes the queued lines; it may block on out for as long as out
// blocks, and only this goroutine waits.
func (w *Writer) drain() {
	for e := range w.queue {
		if e.flushed != nil {
			close(e.flushed)
			continue
		}
		if _, err := w.out.Write(e.line); err != nil {
			w.dropped.Add(1)
		}
	}
}
