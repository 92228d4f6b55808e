package identity

import (
	"strings"
	"testing"
	"time"
)

var pod = Identity{Host: "web-7d9f-x2k4", PID: 1, Version: "v0.4.0", Namespace: "prod", Pod: "web-7d9f-x2k4",
	UID: "3f1e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b", Container: "app"}

// heldAt is a holder's since as a node's mtime gives it: milliseconds.
var heldAt = time.UnixMilli(1796299725123).UTC()

func with(f func(*Identity)) Identity { id := pod; f(&id); return id }

func TestString(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   Identity
		want string
	}{
		{"original tool", Identity{Host: "vm1", PID: 4242}, "vm1:4242"},
		{"host process", Identity{Host: "vm1", PID: 4242, Version: "v0.4.0"}, "vm1:4242 lockex/v0.4.0"},
		{"pod", pod, "web-7d9f-x2k4:1 lockex/v0.4.0 pod=prod/web-7d9f-x2k4 uid=3f1e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b container=app"},
		{"pod name alone", Identity{Host: "h", PID: 1, Version: "dev", Pod: "web-0"}, "h:1 lockex/dev pod=web-0"},
		{"namespace without a name is not shown", Identity{Host: "h", PID: 1, Version: "dev", Namespace: "prod"}, "h:1 lockex/dev"},
		{"pod IP", with(func(i *Identity) { i.IP = "192.0.2.3" }), pod.String() + " ip=192.0.2.3"},
		{"pod IPv6", with(func(i *Identity) { i.IP = "fd00::1" }), pod.String() + " ip=fd00::1"},
		{"holding since", with(func(i *Identity) { i.IP = "192.0.2.3"; i.Since = heldAt }), pod.String() + " ip=192.0.2.3 since=2026-12-03T12:08:45.123Z"},
		{"since without pod", Identity{Host: "vm1", PID: 4242, Version: "v0.4.0", Since: heldAt}, "vm1:4242 lockex/v0.4.0 since=2026-12-03T12:08:45.123Z"},
		{"escapes", Identity{Host: "a b:c", PID: 7, Version: "1+dirty %", Namespace: "n/s", Pod: "p=q", UID: "ü", Container: "c\nd"},
			"a%20b%3Ac:7 lockex/1+dirty%20%25 pod=n%2Fs/p=q uid=%C3%BC container=c%0Ad"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.id.String()
			if got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
			want := tc.id
			if want.Pod == "" {
				want.Namespace = "" // not written without a pod name
			}
			if back, ok := Parse(got); !ok || back != want {
				t.Errorf("Parse(%q) = %+v, %v; want %+v", got, back, ok, want)
			}
		})
	}
}

// Parse takes only the exact form String writes: a kazoo client's data
// that merely contains an identity is not one.
func TestParseRefuses(t *testing.T) {
	full := pod.String()
	for _, data := range []string{
		"",
		"kazoo-holder",
		"host",
		":1",
		"host:",
		"host:x",
		"host:-1",
		"host:1 ",
		" " + full,
		full + " ",
		"x" + full[strings.IndexByte(full, ' '):],
		"holder " + full,
		strings.Replace(full, " lockex/", " lockx/", 1),
		strings.Replace(full, " pod=", "  pod=", 1),
		strings.Replace(full, " uid=", " extra=1 uid=", 1),
		full + " container=app",
		"web-7d9f-x2k4:1 lockex/v0.4.0 container=app uid=3f1e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b", // out of order
		"h:1 lockex/v pod=ns/",
		"h:1 lockex/v uid=",
		"h:1 lockex/v%4",
		"h:1 lockex/v%zz",
		"h:1 lockex/v%41", // a byte escaped that need not be
		"h:01 lockex/v",
		"h:1 uid=u container=c", // fields without lockex's own word
		full + " ip=10.1.2",
		full + " ip=192.0.2.03",
		full + " ip=FD00::1", // not as String writes it
		full + " ip=",
		full + " since=2026-12-03T12:08:45Z",
		full + " since=2026-12-03T13:08:45.123+01:00",
		full + " since=yesterday",
		full + " since=2026-12-03T12:08:45.123Z ip=192.0.2.3", // out of order
		"h:1 since=2026-12-03T12:08:45.123Z",
	} {
		if id, ok := Parse(data); ok {
			t.Errorf("Parse(%q) = %+v, accepted", data, id)
		}
	}
}

func TestCanTakeOver(t *testing.T) {
	for _, tc := range []struct {
		name        string
		self, other Identity
		want        bool
	}{
		{"same container, new version", pod, with(func(i *Identity) { i.Version = "v0.3.9" }), true},
		{"same container", pod, pod, true},
		{"a holder that said since when, with its IP", pod, with(func(i *Identity) { i.IP = "192.0.2.3"; i.Since = heldAt }), true},
		{"another IP", with(func(i *Identity) { i.IP = "192.0.2.4" }), with(func(i *Identity) { i.IP = "192.0.2.3" }), true},
		{"self not PID 1", with(func(i *Identity) { i.PID = 7 }), pod, false},
		{"other not PID 1", pod, with(func(i *Identity) { i.PID = 7 }), false},
		{"other container", pod, with(func(i *Identity) { i.Container = "sidecar" }), false},
		{"other pod", pod, with(func(i *Identity) { i.UID = "0b6f0f2e-0000-4000-8000-000000000000" }), false},
		{"other host", pod, with(func(i *Identity) { i.Host = "web-other" }), false},
		{"other pod name", pod, with(func(i *Identity) { i.Pod = "web-other" }), false},
		{"other namespace", pod, with(func(i *Identity) { i.Namespace = "dev" }), false},
		{"no UID", with(func(i *Identity) { i.UID = "" }), with(func(i *Identity) { i.UID = "" }), false},
		{"no container", with(func(i *Identity) { i.Container = "" }), with(func(i *Identity) { i.Container = "" }), false},
		{"the original tool's node", pod, Identity{Host: pod.Host, PID: 1}, false},
		{"hostname alone", Identity{Host: "h", PID: 1, Version: "v"}, Identity{Host: "h", PID: 1, Version: "v"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.self.CanTakeOver(tc.other); got != tc.want {
				t.Errorf("%+v.CanTakeOver(%+v) = %v, want %v", tc.self, tc.other, got, tc.want)
			}
		})
	}
}

// WithSince adds since to lockex's identity and leaves any other data as
// it is: a kazoo client's identifier, the original tool's hostname:pid.
func TestWithSince(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{pod.String(), pod.String() + " since=2026-12-03T12:08:45.123Z"},
		{pod.String() + " ip=192.0.2.3 since=2026-01-01T00:00:00.000Z", pod.String() + " ip=192.0.2.3 since=2026-12-03T12:08:45.123Z"},
		{"vm1:4242", "vm1:4242"},
		{"kazoo-holder", "kazoo-holder"},
		{"", ""},
	} {
		if got := string(WithSince([]byte(tc.data), heldAt)); got != tc.want {
			t.Errorf("WithSince(%q) = %q, want %q", tc.data, got, tc.want)
		}
	}
}
