package proc

import (
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"github.com/lockex/lockex/internal/exitcode"
)

// Process is a started workload, the leader of its own process group.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	code int
}

// Start runs the file at path with argv and env. The workload shares
// lockex's stdin, stdout and stderr (as *os.File, so no copying goroutines
// sit between them), leads its own process group, and gets SIGKILL if
// lockex dies.
func Start(path string, argv, env []string) (*Process, error) {
	cmd := &exec.Cmd{
		Path: path, Args: argv, Env: env,
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	// Linux sends the parent-death signal when the thread that forked
	// exits, not the process (golang/go#27505). A locked thread is never
	// retired while lockex lives once it is unlocked again; without the
	// lock, the fork could run on a thread the runtime is about to end.
	runtime.LockOSThread()
	err := cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return nil, startError(path, err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go p.wait()
	return p, nil
}

func (p *Process) wait() {
	_ = p.cmd.Wait()
	ws := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		p.code = exitcode.Signal(ws.Signal())
	} else {
		p.code = ws.ExitStatus()
	}
	close(p.done)
}

// Pid is the workload's process id, and its process group's.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done closes when the workload's main process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitCode is the workload's exit code, 128+N if signal N ended it. It is
// valid once Done is closed.
func (p *Process) ExitCode() int { return p.code }

// Signal sends sig to the workload's whole process group.
func (p *Process) Signal(sig syscall.Signal) error {
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}
