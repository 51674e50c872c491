// Package resp is the small Redis client of the guestbook frontend: it writes commands as
// RESP arrays of bulk strings and parses the replies (RESP2: simple strings, errors,
// integers, bulk strings, arrays), with limits, since a reply comes over the network.
package resp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Limits on a reply.
const (
	MaxBulk  = 1 << 20 // bytes of one bulk string
	MaxArray = 1 << 16 // elements of one array
	MaxDepth = 4       // nesting of arrays
	maxLine  = 64 << 10
)

// ErrProtocol is wrapped by every malformed or oversized reply.
var ErrProtocol = errors.New("redis protocol error")

// Kind is a reply's type, as its RESP prefix byte.
type Kind byte

// The RESP2 reply kinds.
const (
	SimpleString Kind = '+'
	Error        Kind = '-'
	Integer      Kind = ':'
	BulkString   Kind = '$'
	Array        Kind = '*'
)

// Value is one reply. Null is set for the null bulk string and null array.
type Value struct {
	Kind  Kind
	Str   string // simple string, error, bulk string
	Int   int64  // integer
	Array []Value
	Null  bool
}

// ServerError is an error reply (-ERR …).
type ServerError string

func (e ServerError) Error() string { return "redis: " + string(e) }

// ReadReply reads one reply.
func ReadReply(r *bufio.Reader) (Value, error) { return readReply(r, 0) }

func readLine(r *bufio.Reader) (string, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
			return "", fmt.Errorf("%w: line longer than %d bytes", ErrProtocol, maxLine)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		break
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return "", fmt.Errorf("%w: line not ended by CRLF", ErrProtocol)
	}
	s := string(line[:len(line)-2])
	if strings.ContainsAny(s, "\r\n") {
		return "", fmt.Errorf("%w: CR or LF inside a line", ErrProtocol)
	}
	return s, nil
}

func parseInt(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || (len(s) > 1 && (s[0] == '+' || s[0] == '0' || strings.HasPrefix(s, "-0"))) {
		return 0, fmt.Errorf("%w: %q is not an integer", ErrProtocol, s)
	}
	return n, nil
}

// parseLen parses the length of a bulk string or an array: -1 (the null value) or 0..max
// (what and unit name the value and what it counts, for the error).
func parseLen(s string, max int64, what, unit string) (int64, error) {
	n, err := parseInt(s)
	if err != nil {
		return 0, err
	}
	if n != -1 && (n < 0 || n > max) {
		return 0, fmt.Errorf("%w: %s of %d %s", ErrProtocol, what, n, unit)
	}
	return n, nil
}

func readReply(r *bufio.Reader, depth int) (Value, error) {
	line, err := readLine(r)
	if err != nil {
		return Value{}, err
	}
	if line == "" {
		return Value{}, fmt.Errorf("%w: empty line", ErrProtocol)
	}
	v := Value{Kind: Kind(line[0])}
	body := line[1:]
	switch v.Kind {
	case SimpleString, Error:
		v.Str = body
	case Integer:
		if v.Int, err = parseInt(body); err != nil {
			return Value{}, err
		}
	case BulkString:
		n, err := parseLen(body, MaxBulk, "bulk string", "bytes")
		if err != nil {
			return Value{}, err
		}
		if n == -1 {
			v.Null = true
			return v, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return Value{}, fmt.Errorf("%w: bulk string: %w", ErrProtocol, err)
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return Value{}, fmt.Errorf("%w: bulk string not ended by CRLF", ErrProtocol)
		}
		v.Str = string(buf[:n])
	case Array:
		n, err := parseLen(body, MaxArray, "array", "elements")
		if err != nil {
			return Value{}, err
		}
		if n == -1 {
			v.Null = true
			return v, nil
		}
		if depth >= MaxDepth {
			return Value{}, fmt.Errorf("%w: arrays nested deeper than %d", ErrProtocol, MaxDepth)
		}
		v.Array = make([]Value, 0, min(n, 64))
		for i := int64(0); i < n; i++ {
			e, err := readReply(r, depth+1)
			if err != nil {
				return Value{}, err
			}
			v.Array = append(v.Array, e)
		}
	default:
		return Value{}, fmt.Errorf("%w: unknown reply type %q", ErrProtocol, line[0])
	}
	return v, nil
}

// AppendCommand appends a command as a RESP array of bulk strings.
func AppendCommand(b []byte, args ...string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}

// Do dials addr, sends one command and reads its reply (one connection per command: the
// frontend's load is a person typing). An error reply is returned as ServerError.
func Do(ctx context.Context, addr string, args ...string) (Value, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Value{}, err
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	_ = conn.SetDeadline(deadline)
	if _, err := conn.Write(AppendCommand(nil, args...)); err != nil {
		return Value{}, err
	}
	v, err := ReadReply(bufio.NewReader(conn))
	if err != nil {
		return Value{}, fmt.Errorf("%s %s: %w", addr, args[0], err)
	}
	if v.Kind == Error {
		return v, ServerError(v.Str)
	}
	return v, nil
}

// Strings returns an array reply of bulk strings (LRANGE's) as strings.
func (v Value) Strings() ([]string, error) {
	if v.Kind != Array {
		return nil, fmt.Errorf("%w: want an array, got %q", ErrProtocol, byte(v.Kind))
	}
	out := make([]string, 0, len(v.Array))
	for _, e := range v.Array {
		if e.Kind != BulkString || e.Null {
			return nil, fmt.Errorf("%w: array element of type %q", ErrProtocol, byte(e.Kind))
		}
		out = append(out, e.Str)
	}
	return out, nil
}
