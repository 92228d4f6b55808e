package zktest

import (
	"testing"
	"time"
)

// TestLatency: a round trip through the relay takes at least twice the
// delay, and one without it far less; a stream sent in many writes while
// the delay holds comes back whole and in order, a round trip late, not
// a round trip per write; a client's close reaches the server.
func TestLatency(t *testing.T) {
	t.Parallel()
	e := startEcho(t)
	l := StartLatency(t, e.ln.Addr().String())
	c := dial(t, l.Addr())
	echo(t, c, "no delay yet")

	const d = 150 * time.Millisecond
	l.SetDelay(d)
	start := time.Now()
	var want []byte
	for i := range 20 {
		msg := []byte{byte('a' + i), '\n'}
		want = append(want, msg...)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	expect(t, c, want)
	took := time.Since(start)
	t.Logf("20 writes 5ms apart came back %v after the first", took.Round(time.Millisecond))
	if took < 2*d {
		t.Errorf("came back after %v, want at least the round trip, %v", took, 2*d)
	}
	if took > 20*d {
		t.Errorf("came back after %v: the writes waited for each other", took)
	}

	l.SetDelay(0)
	echo(t, c, "prompt again")
	c.Close()
	waitFor(t, "the server seeing the close", func() bool { return e.ended.Load() == 1 })
}
