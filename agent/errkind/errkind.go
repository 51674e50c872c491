// Package errkind names failure classes with fixed texts that may leave the guest. The
// console and the host (agent API errors) are host-visible; an error's own text can quote
// sealed data (an image reference, a path, a command), its kind cannot: a Kind's text is a
// constant chosen in code. Packages declare their sentinel errors with New; Of finds the
// kind of any error that wraps one, and Withhold makes an error whose text is its kind only.
package errkind

import (
	"context"
	"errors"
)

// Kind is a failure class. Declare kinds as package variables with constant texts.
type Kind struct{ text string }

// New returns a kind. text must be a constant (it is shown on the console and to the host).
func New(text string) *Kind { return &Kind{text: text} }

// Error is the kind's text.
func (k *Kind) Error() string { return k.text }

// Fixed kinds for errors that carry no Kind.
var (
	// Unknown: the error carries no kind; its text is withheld.
	Unknown = New("failed")
	// Canceled and DeadlineExceeded stand for the context errors.
	Canceled         = New("canceled")
	DeadlineExceeded = New("deadline exceeded")
)

// Of returns the kind of err: the first Kind in its tree (errors.As order), the context
// error kinds, or Unknown. It returns nil for a nil error.
func Of(err error) *Kind {
	if err == nil {
		return nil
	}
	var k *Kind
	switch {
	case errors.As(err, &k):
		return k
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	}
	return Unknown
}

// Text is Of(err)'s text ("" for nil).
func Text(err error) string {
	if k := Of(err); k != nil {
		return k.text
	}
	return ""
}

// withheld is an error that prints its kind only and keeps the detailed error for errors.Is
// and errors.As inside the guest.
type withheld struct {
	kind *Kind
	err  error
}

func (w *withheld) Error() string   { return w.kind.text + " (details withheld: sealed content)" }
func (w *withheld) Unwrap() []error { return []error{w.kind, w.err} }

// Withhold returns an error whose text is kind's only (err may quote sealed data); errors.Is
// and errors.As still see both. kind is a *Kind (sentinels are often declared as error);
// anything else counts as Unknown. A nil err gives nil.
func Withhold(kind error, err error) error {
	if err == nil {
		return nil
	}
	k, ok := kind.(*Kind)
	if !ok {
		k = Unknown
	}
	return &withheld{kind: k, err: err}
}
