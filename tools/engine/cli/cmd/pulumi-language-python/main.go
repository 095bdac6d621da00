// Command pulumi-language-python is a small Python language host for the Pulumi engine.
//
// The upstream host (module github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) is not served
// by the Go module proxy this project can reach, so this host implements the part of the LanguageRuntime
// protocol that `pulumi up/preview/destroy` and Python policy packs need, on top of the Pulumi Go SDK
// (gRPC types, plugin serving and the Python toolchain/virtualenv resolution of sdk/v3/python/toolchain).
//
// It runs programs through `pulumi-language-python-exec` (shipped in the sdk/v3 module and installed next
// to this binary), exactly like the upstream host: python -u pulumi-language-python-exec --monitor ... PROGRAM.
// Dependency installation, code generation, packing and linking are not implemented (install deps with pip).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
)

// Exit code with which pulumi-language-python-exec says it already reported the error to the user.
const userActionableExitCode = 32

const execScriptName = "pulumi-language-python-exec"

func main() {
	var tracing string
	flag.StringVar(&tracing, "tracing", "", "Emit tracing to a Zipkin-compatible tracing endpoint")
	flag.String("root", "", "[obsolete] Project root path")
	// -v and --logtostderr are registered by the logging package (glog).
	flag.Bool("logflow", false, "flow logging to child processes")
	flag.String("virtualenv", "", "[obsolete] virtualenv")
	flag.Parse()
	logging.InitLogging(false, 0, false)
	cmdutil.InitTracing("pulumi-language-python", "pulumi-language-python", tracing)

	args := flag.Args()
	if len(args) == 0 {
		cmdutil.Exit(errors.New("missing required engine RPC address argument"))
	}
	host := &pythonHost{engineAddress: args[0]}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not start language host RPC server: %w", err))
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		cmdutil.Exit(fmt.Errorf("language host RPC stopped serving: %w", err))
	}
}

type pythonHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
}

func optString(opts map[string]any, key string) string {
	if v, ok := opts[key].(string); ok {
		return v
	}
	return ""
}

// resolveToolchain honours the `virtualenv` and `toolchain` runtime options of Pulumi.yaml / PulumiPolicy.yaml.
func resolveToolchain(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, error) {
	opts := map[string]any{}
	if info.GetOptions() != nil {
		opts = info.GetOptions().AsMap()
	}
	tcOpts := toolchain.PythonOptions{
		Root:       info.GetRootDirectory(),
		ProgramDir: info.GetProgramDirectory(),
		Virtualenv: optString(opts, "virtualenv"),
		Toolchain:  toolchain.Pip,
	}
	switch optString(opts, "toolchain") {
	case "uv":
		tcOpts.Toolchain = toolchain.Uv
	case "poetry":
		tcOpts.Toolchain = toolchain.Poetry
	}
	if tcOpts.Virtualenv != "" && !filepath.IsAbs(tcOpts.Virtualenv) {
		// toolchain.newPip resolves relative paths against Root; keep it explicit.
		tcOpts.Virtualenv = filepath.Join(tcOpts.Root, tcOpts.Virtualenv)
	}
	return toolchain.ResolveToolchain(tcOpts)
}

func findExecScript() (string, error) {
	if self, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(self); err == nil {
			self = real
		}
		p := filepath.Join(filepath.Dir(self), execScriptName)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(execScriptName)
	if err != nil {
		return "", fmt.Errorf("%s not found next to the language host nor on PATH: %w", execScriptName, err)
	}
	return p, nil
}

func (h *pythonHost) Handshake(ctx context.Context,
	req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *pythonHost) GetPluginInfo(ctx context.Context, _ *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: strings.TrimPrefix(version.Version, "v")}, nil
}

// Plugins are installed ahead of time (scripts/install-engine); the engine loads them on demand.
func (h *pythonHost) GetRequiredPlugins(ctx context.Context,
	req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *pythonHost) GetRequiredPackages(ctx context.Context,
	req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

func (h *pythonHost) RuntimeOptionsPrompts(ctx context.Context,
	req *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func (h *pythonHost) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	info := req.GetInfo()
	if info == nil {
		return status.Error(codes.InvalidArgument, "InstallDependencies needs program info")
	}
	tc, err := resolveToolchain(info)
	if err != nil {
		return err
	}
	out := &sendWriter{send: func(b []byte) error {
		return server.Send(&pulumirpc.InstallDependenciesResponse{Stdout: b})
	}}
	errs := &sendWriter{send: func(b []byte) error {
		return server.Send(&pulumirpc.InstallDependenciesResponse{Stderr: b})
	}}
	return tc.InstallDependencies(server.Context(), info.GetProgramDirectory(), false, true, out, errs)
}

// sendWriter forwards what pip prints to the engine as it comes.
type sendWriter struct{ send func([]byte) error }

func (w *sendWriter) Write(b []byte) (int, error) {
	if err := w.send(append([]byte(nil), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (h *pythonHost) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	resp := &pulumirpc.AboutResponse{Metadata: map[string]string{}}
	if req.GetInfo() != nil {
		if tc, err := resolveToolchain(req.GetInfo()); err == nil {
			if info, err := tc.About(ctx); err == nil {
				resp.Executable = info.PythonExecutable
				resp.Version = info.PythonVersion.String()
			}
		}
	}
	return resp, nil
}

func (h *pythonHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	if info == nil {
		info = &pulumirpc.ProgramInfo{RootDirectory: req.GetPwd(), ProgramDirectory: req.GetPwd(), EntryPoint: "."}
	}
	program := filepath.Join(info.GetProgramDirectory(), info.GetEntryPoint())
	if info.GetEntryPoint() == "" && req.GetProgram() != "" { //nolint:staticcheck // fallback for old engines
		program = req.GetProgram() //nolint:staticcheck
	}
	script, err := findExecScript()
	if err != nil {
		return nil, err
	}
	tc, err := resolveToolchain(info)
	if err != nil {
		return nil, err
	}
	// Like the upstream host: `pulumi up` on a fresh clone creates the configured virtualenv
	// and installs requirements.txt into it before running the program.
	if err := tc.EnsureVenv(ctx, info.GetProgramDirectory(), false, true, os.Stderr, os.Stderr); err != nil {
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("preparing the virtualenv: %v", err)}, nil
	}

	args := []string{"-u", script,
		"--monitor", req.GetMonitorAddress(),
		"--engine", h.engineAddress,
		"--project", req.GetProject(),
		"--stack", req.GetStack(),
		"--pwd", req.GetPwd(),
		"--dry_run", strconv.FormatBool(req.GetDryRun()),
		"--parallel", strconv.Itoa(int(req.GetParallel())),
		"--root_directory", info.GetRootDirectory(),
	}
	if req.GetOrganization() != "" {
		args = append(args, "--organization", req.GetOrganization())
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	env := cmd.Environ()
	config := req.GetConfig()
	if config == nil {
		config = map[string]string{} // the SDK expects a JSON object, never null
	}
	cfg, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	sk, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	env = append(env,
		"PULUMI_CONFIG="+string(cfg),
		"PULUMI_CONFIG_SECRET_KEYS="+string(sk),
		"PULUMI_PROJECT="+req.GetProject(),
		"PULUMI_STACK="+req.GetStack(),
		"PULUMI_DRY_RUN="+strconv.FormatBool(req.GetDryRun()),
	)
	if req.GetOrganization() != "" {
		env = append(env, "PULUMI_ORGANIZATION="+req.GetOrganization())
	}
	cmd.Env = env
	cmd.Dir = req.GetPwd()
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr

	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == userActionableExitCode {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Problem executing program (could not run language executor): %v", err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// streamWriter forwards a child's stdout or stderr to the engine as RunPluginResponse messages.
type streamWriter struct {
	mu     *sync.Mutex
	server grpc.ServerStreamingServer[pulumirpc.RunPluginResponse]
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	b := append([]byte(nil), p...)
	resp := &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: b}}
	if w.stderr {
		resp = &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: b}}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.server.Send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

// RunPlugin runs a plugin written in Python (a policy pack directory with PulumiPolicy.yaml, or a
// PulumiPlugin.yaml provider): `python -u <program dir>` runs its __main__.py, which prints its gRPC port.
func (h *pythonHost) RunPlugin(req *pulumirpc.RunPluginRequest,
	server grpc.ServerStreamingServer[pulumirpc.RunPluginResponse],
) error {
	info := req.GetInfo()
	if info == nil {
		return status.Error(codes.InvalidArgument, "RunPlugin needs program info")
	}
	tc, err := resolveToolchain(info)
	if err != nil {
		return err
	}
	// Like the upstream host: a configured virtualenv that does not exist yet is created and
	// filled from requirements.txt (a policy pack's own venv, on its first use).
	if err := tc.EnsureVenv(server.Context(), info.GetProgramDirectory(), false, true, os.Stderr, os.Stderr); err != nil {
		return fmt.Errorf("preparing the virtualenv: %w", err)
	}
	program := filepath.Join(info.GetProgramDirectory(), info.GetEntryPoint())
	args := append([]string{"-u", program}, req.GetArgs()...)
	cmd, err := tc.Command(server.Context(), args...)
	if err != nil {
		return err
	}
	env := req.GetEnv()
	if len(env) == 0 {
		env = os.Environ()
	}
	// tc.Command activates the virtualenv in cmd.Env (when one is configured); merge the request's env under it.
	if cmd.Env != nil {
		env = mergeEnv(env, cmd.Env)
	}
	cmd.Env = env
	cmd.Dir = info.GetProgramDirectory()
	if req.GetPwd() != "" && req.GetKind() != "analyzer" {
		cmd.Dir = req.GetPwd()
	}
	mu := &sync.Mutex{}
	cmd.Stdout = streamWriter{mu: mu, server: server}
	cmd.Stderr = streamWriter{mu: mu, server: server, stderr: true}
	code := 0
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return err
		}
		code = exitErr.ExitCode()
	}
	mu.Lock()
	defer mu.Unlock()
	return server.Send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(code)}})
}

// mergeEnv returns base with every KEY=VALUE of overrides replacing or adding to it.
func mergeEnv(base, overrides []string) []string {
	idx := map[string]int{}
	out := append([]string(nil), base...)
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		idx[k] = i
	}
	for _, kv := range overrides {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
		} else {
			idx[k] = len(out)
			out = append(out, kv)
		}
	}
	return out
}

var _ io.Writer = streamWriter{}
