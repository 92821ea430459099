// Tests of the example against a real lse_server: each test starts the
// binary named by $LSE_SERVER_BIN (else target/release or target/debug in
// the repo root) on a free port over a temp dir, and stops it with SIGTERM,
// expecting exit status 0.
package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"stratum/lse"
)

const (
	startTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
	callTimeout  = 30 * time.Second
)

var listeningLine = regexp.MustCompile(`^lse_server listening on (\S+)$`)

func serverBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("LSE_SERVER_BIN"); bin != "" {
		return bin
	}
	// The test runs in client/go/example; the repo root is three up.
	for _, profile := range []string{"release", "debug"} {
		bin := filepath.Join("..", "..", "..", "target", profile, "lse_server")
		if _, err := os.Stat(bin); err == nil {
			return bin
		}
	}
	t.Fatal("no lse_server: set LSE_SERVER_BIN or run `cargo build --release --bin lse_server`")
	return ""
}

// lockedBuffer collects the server's stderr, written by exec's goroutine
// and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startServer runs lse_server over a fresh temp dir until the test ends and
// returns the address it listens on (from its first stdout line).
func startServer(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(serverBinary(t),
		"--port", "0", "--host", "127.0.0.1", "--data-dir", t.TempDir(), "--sync", "none")
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting lse_server: %v", err)
	}

	// The first line names the address; the rest of stdout is drained so
	// the server never blocks on a full pipe. stdoutDone closes at EOF,
	// which comes when the server exits.
	firstLine := make(chan string, 1)
	stdoutDone := make(chan struct{})
	go func() {
		defer close(stdoutDone)
		reader := bufio.NewReader(stdout)
		line, _ := reader.ReadString('\n')
		firstLine <- line
		_, _ = io.Copy(io.Discard, reader)
	}()

	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-stdoutDone:
		case <-time.After(stopTimeout):
			t.Errorf("lse_server did not exit within %v of SIGTERM; killing it", stopTimeout)
			_ = cmd.Process.Kill()
			<-stdoutDone
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("lse_server: %v (want exit status 0); stderr:\n%s", err, stderr.String())
		}
	})

	select {
	case line := <-firstLine:
		match := listeningLine.FindStringSubmatch(strings.TrimRight(line, "\r\n"))
		if match == nil {
			t.Fatalf("first stdout line of lse_server is %q, want `lse_server listening on HOST:PORT`; stderr:\n%s",
				line, stderr.String())
		}
		return match[1]
	case <-time.After(startTimeout):
		t.Fatalf("lse_server did not listen within %v; stderr:\n%s", startTimeout, stderr.String())
		return ""
	}
}

// newClient starts a server and connects to it, both until the test ends.
func newClient(t *testing.T) (context.Context, lse.LseClient) {
	t.Helper()
	address := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	conn, err := Dial(ctx, address)
	if err != nil {
		t.Fatalf("connecting to %s: %v", address, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return ctx, lse.NewLseClient(conn)
}

// chainLines renders a read's test cases as "INPUT -> OUTPUT" lines.
func chainLines(p *lse.GetProblemResponse) []string {
	lines := make([]string, len(p.GetTestCases()))
	for i, tc := range p.GetTestCases() {
		lines[i] = FormatValue(tc.GetInput()) + " -> " + FormatValue(tc.GetExpectedOutput())
	}
	return lines
}

func assertEqual(t *testing.T, what string, got, want interface{}) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestExampleFlow(t *testing.T) {
	ctx, client := newClient(t)
	var out bytes.Buffer
	res, err := Run(ctx, client, &out)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the example printed:\n%s", out.String())
		}
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	imported := res.Imported.GetTestCaseIds()
	if len(imported) != 4 {
		t.Fatalf("ImportProblem returned test case ids %v, want 4", imported)
	}

	t.Run("import assigns fresh ids in chain order", func(t *testing.T) {
		if res.ProblemID == 0 {
			t.Error("problem id is 0")
		}
		prev := res.ProblemID
		for _, id := range imported {
			if id <= prev {
				t.Errorf("test case ids %v (problem %d): want each above the one before", imported, res.ProblemID)
			}
			prev = id
		}
	})

	t.Run("GetProblem returns the import at its version", func(t *testing.T) {
		read := res.Read
		assertEqual(t, "problem id", read.GetProblemId(), res.ProblemID)
		assertEqual(t, "version", read.GetVersion(), res.Imported.GetVersion())
		assertEqual(t, "html", read.GetHtml(), "<h1>A + B</h1><p>Print the sum of two integers.</p>")
		assertEqual(t, "columns", read.GetColumns(), map[string]string{"name": "a-plus-b", "difficulty": "easy"})
		assertEqual(t, "chain ids", ChainIds(read), imported)
		assertEqual(t, "chain", chainLines(read), []string{
			`[1 2] -> 3`,
			`[5 7] -> 12`,
			`"-4 4" -> "0"`,
			`[9007199254740993 1] -> <none>`,
		})
	})

	t.Run("MoveTestCase puts the last test case first", func(t *testing.T) {
		assertEqual(t, "chain ids", ChainIds(res.AfterMove),
			[]uint64{imported[3], imported[0], imported[1], imported[2]})
		assertEqual(t, "version read", res.AfterMove.GetVersion(), res.MovedVersion)
		if res.MovedVersion <= res.Read.GetVersion() {
			t.Errorf("version after the move %d, want above %d", res.MovedVersion, res.Read.GetVersion())
		}
	})

	t.Run("ReplaceTestCases swaps the chain and keeps html and columns", func(t *testing.T) {
		replaced := res.Replaced.GetTestCaseIds()
		if len(replaced) != 2 || replaced[0] <= imported[3] || replaced[1] <= replaced[0] {
			t.Errorf("replacement ids %v, want two fresh ones above %d in order", replaced, imported[3])
		}
		after := res.AfterReplace
		assertEqual(t, "chain ids", ChainIds(after), replaced)
		assertEqual(t, "chain", chainLines(after), []string{`[-1 1] -> 0`, `{a:20 b:22} -> 42`})
		assertEqual(t, "html", after.GetHtml(), res.Read.GetHtml())
		assertEqual(t, "columns", after.GetColumns(), res.Read.GetColumns())
		assertEqual(t, "version read", after.GetVersion(), res.Replaced.GetVersion())
		if res.Replaced.GetVersion() <= res.MovedVersion {
			t.Errorf("version after the replace %d, want above %d", res.Replaced.GetVersion(), res.MovedVersion)
		}
	})

	t.Run("a stale expected_version is Aborted with the current version", func(t *testing.T) {
		assertEqual(t, "code", res.StaleCode, codes.Aborted)
		assertEqual(t, CurrentVersionTrailer, res.StaleCurrent, res.Replaced.GetVersion())
	})

	t.Run("GetProblem after DeleteProblem is NotFound", func(t *testing.T) {
		assertEqual(t, "code", res.AfterDeleteCode, codes.NotFound)
	})
}

func TestStaleReplaceWritesNothing(t *testing.T) {
	ctx, client := newClient(t)
	imported, err := client.ImportProblem(ctx, &lse.ImportProblemRequest{
		Html:      "x",
		TestCases: []*lse.NewTestCase{{Input: intValue(1), ExpectedOutput: intValue(2)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	stale := imported.GetVersion() - 1
	_, err = client.ReplaceTestCases(ctx, &lse.ReplaceTestCasesRequest{
		ProblemId:       imported.GetProblemId(),
		ExpectedVersion: &stale,
		TestCases:       []*lse.NewTestCase{{Input: intValue(3)}},
	})
	if code := status.Code(err); code != codes.Aborted {
		t.Fatalf("ReplaceTestCases at version %d: %v, want Aborted", stale, err)
	}
	// Answered only at the version of the import: nothing changed.
	read, err := client.GetProblem(ctx, &lse.GetProblemRequest{
		ProblemId:       imported.GetProblemId(),
		ExpectedVersion: proto.Uint64(imported.GetVersion()),
	})
	if err != nil {
		t.Fatalf("GetProblem at the import's version: %v", err)
	}
	assertEqual(t, "chain ids", ChainIds(read), imported.GetTestCaseIds())
	assertEqual(t, "chain", chainLines(read), []string{"1 -> 2"})
}

func TestEveryValueKindRoundTrips(t *testing.T) {
	ctx, client := newClient(t)
	values := []*lse.Value{
		intValue(math.MinInt64),
		intValue(math.MaxInt64),
		{Kind: &lse.Value_DoubleValue{DoubleValue: -0.125}},
		stringValue(""),
		stringValue("ünïcödé\n"),
		intList(),
		intList(math.MinInt64, 0, math.MaxInt64),
		{Kind: &lse.Value_StringList{StringList: &lse.StringList{Values: []string{"a", "", "c"}}}},
		stringMap(map[string]string{}),
		stringMap(map[string]string{"k": "v", "": "empty key"}),
	}
	cases := make([]*lse.NewTestCase, len(values))
	for i, v := range values {
		// Each value as an input, and as the output of the one before.
		cases[i] = &lse.NewTestCase{Input: v}
		if i > 0 {
			cases[i-1].ExpectedOutput = v
		}
	}
	imported, err := client.ImportProblem(ctx, &lse.ImportProblemRequest{Html: "values", TestCases: cases})
	if err != nil {
		t.Fatal(err)
	}
	read, err := client.GetProblem(ctx, &lse.GetProblemRequest{ProblemId: imported.GetProblemId()})
	if err != nil {
		t.Fatal(err)
	}
	if len(read.GetTestCases()) != len(cases) {
		t.Fatalf("read %d test cases, want %d", len(read.GetTestCases()), len(cases))
	}
	for i, tc := range read.GetTestCases() {
		if !proto.Equal(tc.GetInput(), cases[i].Input) {
			t.Errorf("input %d: got %s, want %s", i, FormatValue(tc.GetInput()), FormatValue(cases[i].Input))
		}
		if !proto.Equal(tc.GetExpectedOutput(), cases[i].ExpectedOutput) {
			t.Errorf("output %d: got %s, want %s", i,
				FormatValue(tc.GetExpectedOutput()), FormatValue(cases[i].ExpectedOutput))
		}
	}
}

func TestAsVersionConflict(t *testing.T) {
	aborted := status.Error(codes.Aborted, "problem 1 is at version 7")
	for _, tc := range []struct {
		name    string
		err     error
		trailer metadata.MD
		want    uint64 // 0: not a *VersionConflict
	}{
		{"aborted with the trailer", aborted, metadata.Pairs(CurrentVersionTrailer, "7"), 7},
		{"aborted without the trailer", aborted, metadata.MD{}, 0},
		{"aborted with a bad trailer", aborted, metadata.Pairs(CurrentVersionTrailer, "seven"), 0},
		{"another code", status.Error(codes.NotFound, "no"), metadata.Pairs(CurrentVersionTrailer, "7"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := asVersionConflict(tc.err, tc.trailer)
			conflict, ok := err.(*VersionConflict)
			switch {
			case tc.want == 0 && ok:
				t.Errorf("got %v, want an error that is not a *VersionConflict", err)
			case tc.want != 0 && (!ok || conflict.Current != tc.want):
				t.Errorf("got %v, want a version conflict at %d", err, tc.want)
			case err == nil:
				t.Error("got nil, want an error")
			}
		})
	}
}
