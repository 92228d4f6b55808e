package check

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"golang.org/x/mod/modfile"
	"sigs.k8s.io/yaml"
)

// testVersion is the version the builds below stamp in.
const testVersion = "v0.0.0-deploy-check"

// dockerfile is the repository's Dockerfile, parsed by BuildKit's own
// parser, with the build arguments of a linux build of testVersion.
type dockerfile struct {
	stages    []instructions.Stage
	buildArgs map[string]string
	meta      map[string]string // global ARGs, after build args
}

func parseDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile: %s", w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, _ []parser.Range) {
		t.Errorf("Dockerfile lint %s: %s", rule, msg)
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	d := &dockerfile{
		stages:    stages,
		buildArgs: map[string]string{"VERSION": testVersion, "TARGETOS": "linux", "TARGETARCH": runtime.GOARCH, "BUILDPLATFORM": "linux/" + runtime.GOARCH},
		meta:      map[string]string{},
	}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			d.meta[kv.Key] = d.arg(kv)
		}
	}
	return d
}

func (d *dockerfile) arg(kv instructions.KeyValuePairOptional) string {
	if v, ok := d.buildArgs[kv.Key]; ok {
		return v
	}
	if kv.Value != nil {
		return *kv.Value
	}
	return d.meta[kv.Key]
}

func envSlice(m map[string]string) []string {
	var s []string
	for k, v := range m {
		s = append(s, k+"="+v)
	}
	return s
}

// base is a stage's FROM image, with the global ARGs expanded.
func (d *dockerfile) base(t *testing.T, s *instructions.Stage) string {
	t.Helper()
	res, err := shell.NewLex('\\').ProcessWordWithMatches(s.BaseName, shell.EnvsFromSlice(envSlice(d.meta)))
	if err != nil {
		t.Fatalf("FROM %s: %v", s.BaseName, err)
	}
	return res.Result
}

// goBuild finds the stage's RUN that runs go build and returns its leading
// VAR=value assignments and the go build argv, expanded with the stage's
// ARGs as a build would expand them.
func (d *dockerfile) goBuild(t *testing.T, s *instructions.Stage) (env map[string]string, argv []string) {
	t.Helper()
	vars := map[string]string{}
	for _, c := range s.Commands {
		switch c := c.(type) {
		case *instructions.ArgCommand:
			for _, kv := range c.Args {
				vars[kv.Key] = d.arg(kv)
			}
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				vars[kv.Key] = kv.Value
			}
		case *instructions.RunCommand:
			words, err := shell.NewLex('\\').ProcessWords(strings.Join(c.CmdLine, " "), shell.EnvsFromSlice(envSlice(vars)))
			if err != nil {
				t.Fatalf("RUN %q: %v", c.CmdLine, err)
			}
			env, argv := splitAssignments(words)
			if len(argv) > 1 && argv[0] == "go" && argv[1] == "build" {
				return env, argv
			}
		}
	}
	t.Fatalf("stage %q runs no go build", s.Name)
	return nil, nil
}

func splitAssignments(words []string) (map[string]string, []string) {
	env := map[string]string{}
	for len(words) > 0 {
		k, v, ok := strings.Cut(words[0], "=")
		if !ok || strings.HasPrefix(k, "-") {
			break
		}
		env[k] = v
		words = words[1:]
	}
	return env, words
}

// makeBuild is make build's recipe, as make itself expands it.
func makeBuild(t *testing.T) (env map[string]string, argv []string) {
	t.Helper()
	out := run(t, "make", "-s", "-n", "--no-print-directory", "-C", repoRoot, "build", "VERSION="+testVersion, "GO=go")
	words, err := shell.NewLex('\\').ProcessWords(strings.TrimSpace(string(out)), shell.EnvsFromSlice(nil))
	if err != nil {
		t.Fatalf("make -n build: %q: %v", out, err)
	}
	return splitAssignments(words)
}

// without drops "-o file" from a go build argv.
func withoutOutput(argv []string) (rest []string, out string) {
	i := slices.Index(argv, "-o")
	if i < 0 || i+1 >= len(argv) {
		return argv, ""
	}
	return slices.Concat(argv[:i], argv[i+2:]), argv[i+1]
}

func TestDockerfile(t *testing.T) {
	d := parseDockerfile(t)
	if len(d.stages) < 2 {
		t.Fatalf("%d stage(s), want a build stage and a runtime stage", len(d.stages))
	}
	build, final := &d.stages[0], &d.stages[len(d.stages)-1]

	// The build stage builds what make build builds, with the same flags.
	env, argv := d.goBuild(t, build)
	menv, margv := makeBuild(t)
	gotArgs, out := withoutOutput(argv)
	wantArgs, _ := withoutOutput(margv)
	if !slices.Equal(gotArgs, wantArgs) {
		t.Errorf("Dockerfile builds with %q, make build with %q", gotArgs, wantArgs)
	}
	for k, v := range menv {
		if env[k] != v {
			t.Errorf("Dockerfile builds with %s=%q, make build with %q", k, env[k], v)
		}
	}

	// A Go image new enough for go.mod.
	goImage := d.base(t, build)
	_, tag, _ := strings.Cut(goImage, ":")
	imageGo, _, _ := strings.Cut(tag, "-")
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.ParseLax("go.mod", gomod, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !goAtLeast(imageGo, mf.Go.Version) {
		t.Errorf("build stage %s: Go %q, but go.mod says go %s", goImage, imageGo, mf.Go.Version)
	}

	// The runtime stage: distroless static, the binary from the build stage
	// as the entrypoint, a numeric non-root user.
	if b := d.base(t, final); !strings.Contains(b, "distroless/static") {
		t.Errorf("runtime base %s, want a distroless static image", b)
	}
	var copied, user string
	var entry *instructions.EntrypointCommand
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.CopyCommand:
			if c.From == build.Name && slices.Contains(c.SourcePaths, out) {
				copied = c.DestPath
			}
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			entry = c
		case *instructions.RunCommand:
			t.Errorf("runtime stage RUN %q: a distroless image has no shell", c.CmdLine)
		}
	}
	if copied == "" {
		t.Fatalf("runtime stage does not COPY --from=%s %s", build.Name, out)
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %q: want a numeric non-root uid (runAsNonRoot can only check a number)", user)
	}
	if entry == nil || entry.PrependShell || !slices.Equal(entry.CmdLine, []string{copied}) || copied != "/lockex" {
		t.Errorf("ENTRYPOINT %+v, want the exec form [\"/lockex\"], the binary copied to %s", entry, copied)
	}

	// Build the binary as the build stage would, from the build context
	// that .dockerignore leaves, and run it.
	src := emulateCopies(t, build, t.TempDir())
	bin := filepath.Join(t.TempDir(), "lockex")
	n := len(gotArgs)
	cmd := exec.Command(gotArgs[0], slices.Concat(gotArgs[1:n-1], []string{"-o", bin}, gotArgs[n-1:])...)
	cmd.Dir = src
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the build stage's go build on its build context: %v\n%s", err, o)
	}
	if v := string(run(t, bin, "--version")); !strings.HasPrefix(v, "lockex "+testVersion+" ") {
		t.Errorf("--version: %q, want lockex %s", v, testVersion)
	}
}

// goAtLeast reports whether Go version have (1.26) covers want (1.26.0).
func goAtLeast(have, want string) bool {
	h, w := strings.Split(have, "."), strings.Split(want, ".")
	for i := 0; i < len(w); i++ {
		if i >= len(h) {
			return true // "1.26" is the newest 1.26.x
		}
		hn, err1 := strconv.Atoi(h[i])
		wn, err2 := strconv.Atoi(w[i])
		if err1 != nil || err2 != nil {
			return false
		}
		if hn != wn {
			return hn > wn
		}
	}
	return true
}

// emulateCopies carries out the stage's WORKDIR and COPY (from the build
// context) instructions into root, which stands for the image's root, and
// returns the directory its RUN instructions would run in.
func emulateCopies(t *testing.T, s *instructions.Stage, root string) string {
	t.Helper()
	ctx := buildContext(t)
	workdir := "/"
	for _, c := range s.Commands {
		switch c := c.(type) {
		case *instructions.WorkdirCommand:
			workdir = path.Join(workdir, c.Path)
		case *instructions.CopyCommand:
			if c.From != "" {
				continue
			}
			dest := c.DestPath
			if !path.IsAbs(dest) {
				dir := strings.HasSuffix(dest, "/") || dest == "."
				dest = path.Join(workdir, dest)
				if dir {
					dest += "/"
				}
			}
			for _, src := range c.SourcePaths {
				copyFromContext(t, ctx, path.Clean(src), dest, len(c.SourcePaths) > 1, root)
			}
		}
	}
	return filepath.Join(root, filepath.FromSlash(workdir))
}

// buildContext lists the repository's files that docker sends as the build
// context: everything .dockerignore does not exclude.
func buildContext(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	ctx := map[string]bool{}
	err = filepath.WalkDir(repoRoot, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, p)
		rel = filepath.ToSlash(rel)
		excluded, err := pm.MatchesOrParentMatches(rel)
		if err == nil && !excluded {
			ctx[rel] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, needed := range []string{"go.mod", "go.sum", "cmd/lockex/main.go"} {
		if !ctx[needed] {
			t.Errorf(".dockerignore excludes %s", needed)
		}
	}
	for rel := range ctx {
		if strings.HasPrefix(rel, ".git/") || strings.HasPrefix(rel, "bin/") || strings.HasPrefix(rel, "deploy/") {
			t.Errorf(".dockerignore lets %s into the build context", rel)
		}
	}
	return ctx
}

func copyFromContext(t *testing.T, ctx map[string]bool, src, dest string, many bool, root string) {
	t.Helper()
	if strings.ContainsAny(src, "*?[") {
		t.Fatalf("COPY %s: wildcards are not emulated", src)
	}
	write := func(rel, to string) {
		b, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(rel)))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, filepath.FromSlash(to))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if ctx[src] { // a file
		to := dest
		if many || strings.HasSuffix(dest, "/") {
			to = path.Join(dest, path.Base(src))
		}
		write(src, to)
		return
	}
	n := 0
	for rel := range ctx { // a directory: its contents
		if strings.HasPrefix(rel, src+"/") {
			write(rel, path.Join(dest, strings.TrimPrefix(rel, src+"/")))
			n++
		}
	}
	if n == 0 {
		t.Fatalf("COPY %s: not in the build context", src)
	}
}

// koConfig is the part of .ko.yaml these checks read.
type koConfig struct {
	DefaultBaseImage string   `json:"defaultBaseImage"`
	DefaultPlatforms []string `json:"defaultPlatforms"`
	Builds           []struct {
		ID      string   `json:"id"`
		Dir     string   `json:"dir"`
		Main    string   `json:"main"`
		Env     []string `json:"env"`
		Flags   []string `json:"flags"`
		Ldflags []string `json:"ldflags"`
	} `json:"builds"`
}

// TestKoConfig: ko builds the binary make build builds, with the same
// flags and environment, on the Dockerfile's runtime base.
func TestKoConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, ".ko.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ko koConfig
	if err := yaml.UnmarshalStrict(b, &ko); err != nil {
		t.Fatalf(".ko.yaml: %v", err)
	}
	if len(ko.Builds) != 1 {
		t.Fatalf(".ko.yaml: %d builds, want 1", len(ko.Builds))
	}
	kb := ko.Builds[0]
	menv, margv := makeBuild(t)
	margv, _ = withoutOutput(margv)
	if pkg := margv[len(margv)-1]; kb.Main != pkg {
		t.Errorf(".ko.yaml main %q, make build builds %q", kb.Main, pkg)
	}
	for k, v := range menv {
		if !slices.Contains(kb.Env, k+"="+v) {
			t.Errorf(".ko.yaml env %q lacks make build's %s=%s", kb.Env, k, v)
		}
	}
	// make build's flags: -ldflags X moves to ldflags, the rest to flags.
	var wantFlags []string
	var wantLd string
	for i := 2; i < len(margv)-1; i++ {
		if margv[i] == "-ldflags" {
			wantLd = margv[i+1]
			i++
			continue
		}
		wantFlags = append(wantFlags, margv[i])
	}
	if !slices.Equal(kb.Flags, wantFlags) {
		t.Errorf(".ko.yaml flags %q, make build %q", kb.Flags, wantFlags)
	}
	ld := strings.ReplaceAll(strings.Join(kb.Ldflags, " "), "{{.Env.VERSION}}", testVersion)
	if ld != wantLd {
		t.Errorf(".ko.yaml ldflags (VERSION=%s) %q, make build %q", testVersion, ld, wantLd)
	}
	d := parseDockerfile(t)
	if want := d.base(t, &d.stages[len(d.stages)-1]); ko.DefaultBaseImage != want {
		t.Errorf(".ko.yaml defaultBaseImage %q, the Dockerfile's runtime base %q", ko.DefaultBaseImage, want)
	}
}

// TestDockerImage builds the image and runs it, where a container engine
// answers; none can run here without one.
func TestDockerImage(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("no container engine: docker is not installed")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("no container engine: docker is installed but its daemon does not answer: %s", strings.TrimSpace(string(out)))
	}
	tag := "lockex-deploy-check:" + testVersion
	run(t, "docker", "build", "--build-arg", "VERSION="+testVersion, "-t", tag, repoRoot)
	defer exec.Command("docker", "rmi", tag).Run()
	if v := string(run(t, "docker", "run", "--rm", tag, "--version")); !strings.HasPrefix(v, "lockex "+testVersion+" ") {
		t.Errorf("docker run %s --version: %q", tag, v)
	}
	if u := strings.TrimSpace(string(run(t, "docker", "image", "inspect", "-f", "{{.Config.User}}", tag))); u == "" || u == "0" || strings.HasPrefix(u, "root") {
		t.Errorf("image user %q, want non-root", u)
	}
}
