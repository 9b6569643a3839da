package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// flushInterval bounds how stale the record file may be: the bench polls it
// every 50 ms, and writing every push through would cost a syscall each.
const flushInterval = 10 * time.Millisecond

// recorder appends one line per answered push to a file.
type recorder struct {
	mu  sync.Mutex
	out *bufio.Writer
}

func newRecorder(path string) (*recorder, error) {
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	r := &recorder{out: bufio.NewWriterSize(file, 1<<16)}
	go r.flushEvery(flushInterval)
	return r, nil
}

func (r *recorder) flushEvery(interval time.Duration) {
	for range time.Tick(interval) {
		r.flush()
	}
}

func (r *recorder) flush() {
	r.mu.Lock()
	r.out.Flush()
	r.mu.Unlock()
}

// record notes one answered push; tabs and newlines in the client's strings
// would break the line format, so they are replaced.
func (r *recorder) record(provider string, status int, arrived time.Time, connection, notificationID, token string) {
	line := fmt.Sprintf("%s\t%d\t%.6f\t%s\t%s\t%s\n", provider, status,
		float64(arrived.UnixNano())/1e9, connection, clean(notificationID), clean(token))
	r.mu.Lock()
	r.out.WriteString(line)
	r.mu.Unlock()
}

var unsafeChars = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ")

func clean(s string) string { return unsafeChars.Replace(s) }
