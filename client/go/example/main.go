// Command example is Stratum from Go: it imports a whole problem, reads it
// back, moves a test case, replaces the test data under a version check,
// shows what a stale version check looks like, and deletes the problem.
//
//	example [-address HOST:PORT]   (default: $LSE_ADDRESS or localhost:50051)
//
// The client code is package stratum/lse, generated from proto/lse.proto by
// `protoc --proto_path=proto --go_out=client/go --go-grpc_out=client/go
// proto/lse.proto` (see ../README.md for how to build without a module proxy).
//
// What to know about the generated types:
//
//   - Ids and versions are uint64 and int values int64: Go holds both
//     exactly, no conversions needed (Node has to use decimal strings).
//   - A Value is a oneof: its Kind field holds exactly one wrapper struct,
//     &lse.Value_IntValue{IntValue: 3}, &lse.Value_IntList{IntList:
//     &lse.IntList{Values: ...}} and so on. A Value with Kind nil is
//     INVALID_ARGUMENT. Read one with a type switch on v.GetKind() (see
//     FormatValue). An empty list must still pick its wrapper.
//   - `optional uint64 expected_version` is a *uint64: nil means "no
//     check"; proto.Uint64(v) makes one.
//   - An unset message field (a test case without an expected output) is a
//     nil pointer; the generated GetX methods are nil-safe.
//
// Errors are gRPC statuses: status.Code(err) is codes.NotFound,
// codes.Aborted, ... (their meaning is at the top of proto/lse.proto). A
// stale expected_version is codes.Aborted and the trailer
// `lse-current-version` holds the problem's current version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"stratum/lse"
)

// MaxMessageBytes is the server's default --max-message-bytes (64 MiB). gRPC
// clients refuse to receive messages over 4 MiB by default, which a
// GetProblem of a large problem (or any value over 4 MiB) would exceed.
const MaxMessageBytes = 64 << 20

// CurrentVersionTrailer names the trailer of an ABORTED reply that holds the
// problem's current version.
const CurrentVersionTrailer = "lse-current-version"

// Dial connects to a server at address without TLS, with the receive limit
// raised to MaxMessageBytes; it waits for the connection until ctx ends. (grpc-go 1.34 and later spell WithInsecure
// grpc.WithTransportCredentials(insecure.NewCredentials()); Debian bookworm
// ships 1.33.)
func Dial(ctx context.Context, address string) (*grpc.ClientConn, error) {
	return grpc.DialContext(ctx, address,
		grpc.WithInsecure(),
		grpc.WithBlock(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes)),
	)
}

// Value constructors: each wraps a Go value in its oneof member.

func intValue(v int64) *lse.Value {
	return &lse.Value{Kind: &lse.Value_IntValue{IntValue: v}}
}

func stringValue(v string) *lse.Value {
	return &lse.Value{Kind: &lse.Value_StringValue{StringValue: v}}
}

func intList(vs ...int64) *lse.Value {
	return &lse.Value{Kind: &lse.Value_IntList{IntList: &lse.IntList{Values: vs}}}
}

func stringMap(entries map[string]string) *lse.Value {
	return &lse.Value{Kind: &lse.Value_StringMap{StringMap: &lse.StringMap{Entries: entries}}}
}

// FormatValue renders a Value for people: `[2 7]`, `"x"`, `{a:b}`, `<none>`
// for an unset one (a test case with no expected output).
func FormatValue(v *lse.Value) string {
	switch k := v.GetKind().(type) {
	case nil:
		return "<none>"
	case *lse.Value_IntValue:
		return strconv.FormatInt(k.IntValue, 10)
	case *lse.Value_DoubleValue:
		return strconv.FormatFloat(k.DoubleValue, 'g', -1, 64)
	case *lse.Value_StringValue:
		return strconv.Quote(k.StringValue)
	case *lse.Value_IntList:
		return fmt.Sprint(k.IntList.GetValues())
	case *lse.Value_StringList:
		return fmt.Sprintf("%q", k.StringList.GetValues())
	case *lse.Value_StringMap:
		return formatMap(k.StringMap.GetEntries())
	case *lse.Value_BytesValue:
		return fmt.Sprintf("%d bytes", len(k.BytesValue))
	default:
		return fmt.Sprintf("<unknown value kind %T>", k)
	}
}

// formatMap renders a map in key order (Go maps have none of their own).
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ":" + m[k]
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// PrintProblem writes a whole-problem read: id, version, html, columns and
// the test cases in chain order with their expected outputs.
func PrintProblem(w io.Writer, p *lse.GetProblemResponse) {
	fmt.Fprintf(w, "problem %d at version %d: %q %s\n",
		p.GetProblemId(), p.GetVersion(), p.GetHtml(), formatMap(p.GetColumns()))
	for i, tc := range p.GetTestCases() {
		fmt.Fprintf(w, "  %d. test case %d: %s -> %s\n",
			i+1, tc.GetTestCaseId(), FormatValue(tc.GetInput()), FormatValue(tc.GetExpectedOutput()))
	}
}

// ChainIds returns the test case ids of a whole-problem read, in chain order.
func ChainIds(p *lse.GetProblemResponse) []uint64 {
	ids := make([]uint64, len(p.GetTestCases()))
	for i, tc := range p.GetTestCases() {
		ids[i] = tc.GetTestCaseId()
	}
	return ids
}

// VersionConflict is the current version an ABORTED reply names in its
// trailer.
type VersionConflict struct {
	Current uint64
}

func (e *VersionConflict) Error() string {
	return fmt.Sprintf("version conflict: the problem is at version %d", e.Current)
}

// asVersionConflict turns an ABORTED error and the trailer of its call into
// a *VersionConflict; any other error is returned as it is.
func asVersionConflict(err error, trailer metadata.MD) error {
	if status.Code(err) != codes.Aborted {
		return err
	}
	values := trailer.Get(CurrentVersionTrailer)
	if len(values) != 1 {
		return fmt.Errorf("ABORTED without one %s trailer (got %q): %w", CurrentVersionTrailer, values, err)
	}
	current, parseErr := strconv.ParseUint(values[0], 10, 64)
	if parseErr != nil {
		return fmt.Errorf("ABORTED with a bad %s trailer %q: %w", CurrentVersionTrailer, values[0], err)
	}
	return &VersionConflict{Current: current}
}

// Result is what the flow saw, for the test to check.
type Result struct {
	ProblemID uint64
	// The import's reply and the read that follows it.
	Imported *lse.ImportProblemResponse
	Read     *lse.GetProblemResponse
	// The move's new version and the chain after it.
	MovedVersion uint64
	AfterMove    *lse.GetProblemResponse
	// The replace's reply (made with expected_version = MovedVersion) and
	// the chain after it.
	Replaced     *lse.ReplaceTestCasesResponse
	AfterReplace *lse.GetProblemResponse
	// The refused write with the stale version MovedVersion: its status
	// code and the current version from its trailer.
	StaleCode    codes.Code
	StaleCurrent uint64
	// The status code of a GetProblem after DeleteProblem.
	AfterDeleteCode codes.Code
}

// Run is the example: every step prints what it did to w. It stops at the
// first unexpected error (a stale version check that is not refused is one).
func Run(ctx context.Context, client lse.LseClient, w io.Writer) (*Result, error) {
	res := &Result{}

	// 1. One atomic RPC creates the problem, its columns and its whole chain.
	// A test case without an expected output leaves ExpectedOutput nil.
	imported, err := client.ImportProblem(ctx, &lse.ImportProblemRequest{
		Html:    "<h1>A + B</h1><p>Print the sum of two integers.</p>",
		Columns: map[string]string{"name": "a-plus-b", "difficulty": "easy"},
		TestCases: []*lse.NewTestCase{
			{Input: intList(1, 2), ExpectedOutput: intValue(3)},
			{Input: intList(5, 7), ExpectedOutput: intValue(12)},
			{Input: stringValue("-4 4"), ExpectedOutput: stringValue("0")},
			// No expected output (yet). Over 2^53, exact as an int64.
			{Input: intList(9007199254740993, 1)},
		},
	})
	if err != nil {
		return res, fmt.Errorf("ImportProblem: %w", err)
	}
	res.Imported = imported
	res.ProblemID = imported.GetProblemId()
	id := res.ProblemID
	fmt.Fprintf(w, "imported problem %d at version %d, test cases %v\n",
		id, imported.GetVersion(), imported.GetTestCaseIds())

	// 2. One GetProblem returns everything, all from one version.
	if res.Read, err = client.GetProblem(ctx, &lse.GetProblemRequest{ProblemId: id}); err != nil {
		return res, fmt.Errorf("GetProblem: %w", err)
	}
	PrintProblem(w, res.Read)

	// 3. Move the last test case (the one without an output) to the front.
	// Position is a oneof too: the wrapper type picks the member (Start's
	// bool is ignored).
	ids := imported.GetTestCaseIds()
	if len(ids) == 0 {
		return res, errors.New("ImportProblem returned no test case ids")
	}
	last := ids[len(ids)-1]
	moved, err := client.MoveTestCase(ctx, &lse.MoveTestCaseRequest{
		ProblemId:  id,
		TestCaseId: last,
		Position:   &lse.Position{At: &lse.Position_Start{Start: true}},
	})
	if err != nil {
		return res, fmt.Errorf("MoveTestCase: %w", err)
	}
	res.MovedVersion = moved.GetVersion()
	fmt.Fprintf(w, "moved test case %d to the start: version %d\n", last, res.MovedVersion)
	if res.AfterMove, err = client.GetProblem(ctx, &lse.GetProblemRequest{ProblemId: id}); err != nil {
		return res, fmt.Errorf("GetProblem after the move: %w", err)
	}
	PrintProblem(w, res.AfterMove)

	// 4. Replace the whole chain, only if nobody changed the problem since
	// the move: expected_version is a *uint64 (nil: no check).
	replaced, err := client.ReplaceTestCases(ctx, &lse.ReplaceTestCasesRequest{
		ProblemId:       id,
		ExpectedVersion: proto.Uint64(res.MovedVersion),
		TestCases: []*lse.NewTestCase{
			{Input: intList(-1, 1), ExpectedOutput: intValue(0)},
			{Input: stringMap(map[string]string{"a": "20", "b": "22"}), ExpectedOutput: intValue(42)},
		},
	})
	if err != nil {
		return res, fmt.Errorf("ReplaceTestCases at version %d: %w", res.MovedVersion, err)
	}
	res.Replaced = replaced
	fmt.Fprintf(w, "replaced the test cases at version %d: version %d, test cases %v\n",
		res.MovedVersion, replaced.GetVersion(), replaced.GetTestCaseIds())
	if res.AfterReplace, err = client.GetProblem(ctx, &lse.GetProblemRequest{ProblemId: id}); err != nil {
		return res, fmt.Errorf("GetProblem after the replace: %w", err)
	}
	PrintProblem(w, res.AfterReplace)

	// 5. The same replace again, with the now stale version: ABORTED, and
	// nothing written. grpc.Trailer collects the reply's trailer, which
	// names the current version to read at and retry from.
	var trailer metadata.MD
	_, err = client.ReplaceTestCases(ctx, &lse.ReplaceTestCasesRequest{
		ProblemId:       id,
		ExpectedVersion: proto.Uint64(res.MovedVersion),
		TestCases:       []*lse.NewTestCase{{Input: intValue(0)}},
	}, grpc.Trailer(&trailer))
	res.StaleCode = status.Code(err)
	var conflict *VersionConflict
	switch err = asVersionConflict(err, trailer); {
	case errors.As(err, &conflict):
		res.StaleCurrent = conflict.Current
		fmt.Fprintf(w, "replace at stale version %d: %s (%s: %d)\n",
			res.MovedVersion, res.StaleCode, CurrentVersionTrailer, conflict.Current)
	case err == nil:
		return res, fmt.Errorf("ReplaceTestCases at stale version %d succeeded", res.MovedVersion)
	default:
		return res, fmt.Errorf("ReplaceTestCases at stale version %d: %w", res.MovedVersion, err)
	}

	// 6. Delete the problem with everything in it; reads are NOT_FOUND after.
	if _, err = client.DeleteProblem(ctx, &lse.ProblemRef{ProblemId: id}); err != nil {
		return res, fmt.Errorf("DeleteProblem: %w", err)
	}
	_, err = client.GetProblem(ctx, &lse.GetProblemRequest{ProblemId: id})
	res.AfterDeleteCode = status.Code(err)
	if res.AfterDeleteCode != codes.NotFound {
		return res, fmt.Errorf("GetProblem after DeleteProblem: want NotFound, got %v", err)
	}
	fmt.Fprintf(w, "deleted problem %d: GetProblem is now %s\n", id, res.AfterDeleteCode)
	return res, nil
}

func main() {
	defaultAddress := os.Getenv("LSE_ADDRESS")
	if defaultAddress == "" {
		defaultAddress = "localhost:50051"
	}
	address := flag.String("address", defaultAddress, "server address, HOST:PORT")
	flag.Parse()
	log.SetFlags(0)
	if err := dialAndRun(*address); err != nil {
		log.Fatal(err)
	}
}

// dialAndRun is main's body, so that its deferred calls run before the exit.
func dialAndRun(address string) error {
	dialCtx, cancelDial := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelDial()
	conn, err := Dial(dialCtx, address)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", address, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = Run(ctx, lse.NewLseClient(conn), os.Stdout)
	return err
}
