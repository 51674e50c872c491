package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// QMP is a small client of QEMU's machine protocol (QMP) on a unix socket: one command at a
// time, each under a deadline, every reply checked (a JSON object of the expected shape with
// the command's id) before it is used. QEMU is the tenant's emulator: its replies are
// untrusted input, bounded to MaxQMPLine bytes a line.
type QMP struct {
	conn    *net.UnixConn
	r       *bufio.Reader
	timeout time.Duration

	mu sync.Mutex
	id int
}

// MaxQMPLine bounds one QMP message (reply, event or greeting).
const MaxQMPLine = 64 << 10

// DefaultQMPTimeout bounds each QMP command when the context has no earlier deadline.
const DefaultQMPTimeout = 10 * time.Second

// QMPError is a command's error reply ({"error": {"class", "desc"}}).
type QMPError struct {
	Command, Class, Desc string
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// ErrQMPProtocol is wrapped by every malformed or unexpected QMP message.
var ErrQMPProtocol = errors.New("qmp protocol error")

// qmpMessage is one message from QEMU: a greeting, a command's reply or an event.
type qmpMessage struct {
	Greeting bool
	Event    string
	ID       string
	Return   json.RawMessage
	Err      *QMPError
}

// parseQMPMessage checks one line from QEMU's QMP socket: a JSON object that is exactly one
// of a greeting ({"QMP": {...}}), a command reply ({"return": …} or {"error": {"class":
// string, "desc": string}}, with an optional string "id") or an event ({"event": string, …}).
func parseQMPMessage(line []byte) (qmpMessage, error) {
	var m qmpMessage
	if len(line) > MaxQMPLine {
		return m, fmt.Errorf("%w: message of %d bytes, at most %d", ErrQMPProtocol, len(line), MaxQMPLine)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil || raw == nil {
		return m, fmt.Errorf("%w: not a JSON object: %q", ErrQMPProtocol, clip(line))
	}
	kinds := 0
	for _, k := range []string{"QMP", "return", "error", "event"} {
		if _, ok := raw[k]; ok {
			kinds++
		}
	}
	if kinds != 1 {
		return m, fmt.Errorf("%w: want exactly one of QMP, return, error, event: %q", ErrQMPProtocol, clip(line))
	}
	if id, ok := raw["id"]; ok {
		if err := json.Unmarshal(id, &m.ID); err != nil {
			return m, fmt.Errorf("%w: id is not a string: %q", ErrQMPProtocol, clip(line))
		}
	}
	switch {
	case raw["QMP"] != nil:
		var g map[string]json.RawMessage
		if err := json.Unmarshal(raw["QMP"], &g); err != nil || g == nil {
			return m, fmt.Errorf("%w: greeting is not an object: %q", ErrQMPProtocol, clip(line))
		}
		m.Greeting = true
	case raw["event"] != nil:
		if err := json.Unmarshal(raw["event"], &m.Event); err != nil || m.Event == "" {
			return m, fmt.Errorf("%w: event name is not a string: %q", ErrQMPProtocol, clip(line))
		}
	case raw["error"] != nil:
		var e struct {
			Class *string `json:"class"`
			Desc  *string `json:"desc"`
		}
		if err := json.Unmarshal(raw["error"], &e); err != nil || e.Class == nil || e.Desc == nil {
			return m, fmt.Errorf("%w: error reply without string class and desc: %q", ErrQMPProtocol, clip(line))
		}
		m.Err = &QMPError{Class: string(clip([]byte(*e.Class))), Desc: string(clip([]byte(*e.Desc)))}
	default:
		if bytes.Equal(bytes.TrimSpace(raw["return"]), []byte("null")) {
			return m, fmt.Errorf("%w: null return: %q", ErrQMPProtocol, clip(line))
		}
		m.Return = raw["return"]
	}
	return m, nil
}

// clip bounds what a message contributes to an error text.
func clip(b []byte) []byte {
	if len(b) > 256 {
		return append(b[:256:256], "…"...)
	}
	return b
}

// DialQMP connects to QEMU's QMP socket, reads the greeting and leaves capabilities
// negotiation mode (qmp_capabilities). timeout bounds each command (0 = DefaultQMPTimeout).
func DialQMP(ctx context.Context, path string, timeout time.Duration) (*QMP, error) {
	if timeout <= 0 {
		timeout = DefaultQMPTimeout
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := d.DialContext(dctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp dial %s: %w", path, err)
	}
	q := &QMP{conn: c.(*net.UnixConn), r: bufio.NewReaderSize(c, 4096), timeout: timeout}
	if err := q.handshake(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	return q, nil
}

func (q *QMP) handshake(ctx context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.setDeadline(ctx)
	m, err := q.read()
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if !m.Greeting {
		return fmt.Errorf("%w: first message is not the greeting", ErrQMPProtocol)
	}
	_, err = q.executeLocked(ctx, "qmp_capabilities", nil, nil)
	return err
}

// Close closes the connection (QEMU keeps running).
func (q *QMP) Close() error { return q.conn.Close() }

func (q *QMP) setDeadline(ctx context.Context) {
	dl := time.Now().Add(q.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = q.conn.SetDeadline(dl)
}

// read reads and checks one message.
func (q *QMP) read() (qmpMessage, error) {
	var line []byte
	for {
		part, isPrefix, err := q.r.ReadLine()
		if err != nil {
			return qmpMessage{}, err
		}
		line = append(line, part...)
		if len(line) > MaxQMPLine {
			return qmpMessage{}, fmt.Errorf("%w: message longer than %d bytes", ErrQMPProtocol, MaxQMPLine)
		}
		if !isPrefix {
			break
		}
	}
	return parseQMPMessage(line)
}

// Execute runs one command with arguments (nil = none) and decodes its return value into
// result (nil = ignore it). An error reply is a *QMPError.
func (q *QMP) Execute(ctx context.Context, command string, args, result any) error {
	return q.ExecuteWithFile(ctx, command, args, nil, result)
}

// ExecuteWithFile is Execute passing f's descriptor with the command (SCM_RIGHTS), as QMP's
// add-fd and getfd take it. QEMU gets its own copy; the caller still owns f.
func (q *QMP) ExecuteWithFile(ctx context.Context, command string, args any, f *os.File, result any) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	ret, err := q.executeLocked(ctx, command, args, f)
	if err != nil {
		return err
	}
	if result != nil {
		if err := json.Unmarshal(ret, result); err != nil {
			return fmt.Errorf("%w: %s: return value %q: %v", ErrQMPProtocol, command, clip(ret), err)
		}
	}
	return nil
}

func (q *QMP) executeLocked(ctx context.Context, command string, args any, f *os.File) (json.RawMessage, error) {
	q.id++
	id := "sealpod-" + strconv.Itoa(q.id)
	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	b = append(b, '\n')
	q.setDeadline(ctx)
	if f != nil {
		n, _, err := q.conn.WriteMsgUnix(b, syscall.UnixRights(int(f.Fd())), nil)
		if err == nil && n != len(b) {
			err = fmt.Errorf("short write (%d of %d bytes)", n, len(b))
		}
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
	} else if _, err := q.conn.Write(b); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		m, err := q.read()
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		switch {
		case m.Event != "":
			continue // asynchronous events (DEVICE_ADDED, …) are not replies
		case m.Greeting:
			return nil, fmt.Errorf("qmp %s: %w: greeting in place of a reply", command, ErrQMPProtocol)
		case m.ID != id:
			return nil, fmt.Errorf("qmp %s: %w: reply id %q, want %q", command, ErrQMPProtocol, m.ID, id)
		case m.Err != nil:
			m.Err.Command = command
			return nil, m.Err
		}
		return m.Return, nil
	}
}
