#!/bin/sh
# A --health-cmd for the tests: health_check.sh DIR MARK. It notes each run
# in DIR/checks and leaves a child behind in its process group,
# DIR/lo-MARK (a link to sleep, so the test finds it by its name), which
# lockex must kill and reap. It fails while DIR/sick exists, and hangs
# while DIR/hang does.
d=$1
leftover=$d/lo-$2
echo check >> "$d/checks"
"$leftover" 1000 &
if [ -e "$d/hang" ]; then
	"$leftover" 1000
fi
if [ -e "$d/sick" ]; then
	echo "sick: $d/sick exists"
	exit 1
fi
