// Command fastfake serves a fake APNs and a fake FCM HTTP v1 endpoint (with
// its OAuth token endpoint) for the push benchmark, out of the benchmark's
// process: the Python fakes in willowe_tasks/testing cost more CPU per push
// than the worker they measure, on the same cores.
//
// The rules enforced are those of willowe_tasks/testing (fake_apns.py,
// fake_fcm.py, _google_oauth.py), each citing the provider's documentation;
// only what a well-formed push from the worker's clients needs is checked
// here. Every answered push is appended to the record file as one line,
// tab-separated: provider, status, unix seconds it arrived, the client's
// address (one per connection), notification id, token. The bench tails
// that file.
//
// Once both listeners are bound, their ports are written as JSON to the ready
// file (written whole, then renamed, so a reader never sees half of it).
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"
)

// maxConcurrentStreams is what the server allows per HTTP/2 connection, as the
// Python fakes' MAX_CONCURRENT_STREAMS (APNs allows about 1000); Go's default
// of 250 would make a client open connections the real provider doesn't need.
const maxConcurrentStreams = 1000

// idleTimeout keeps idle connections as long as the Python fakes'
// KEEP_ALIVE_TIMEOUT_S: APNs keeps connections for hours.
const idleTimeout = 600 * time.Second

// procs is the fake's share of the cores (Go's GOMAXPROCS, unless that is set):
// it serves a few thousand pushes a second on one, and with a single P the
// scheduler does not spin looking for work between wake-ups, which was a
// fifth of the fake's CPU at the push bench's rates.
const procs = 1

func main() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(procs)
	}
	var opts options
	flag.StringVar(&opts.certFile, "cert", "", "server certificate chain (PEM)")
	flag.StringVar(&opts.keyFile, "key", "", "server private key (PEM)")
	flag.StringVar(&opts.apnsKeyFile, "apns-key", "", "APNs signing key (.p8, PKCS#8 PEM) whose public half checks provider tokens")
	flag.StringVar(&opts.teamID, "team-id", "", "APNs team id (the provider token's iss)")
	flag.StringVar(&opts.keyID, "key-id", "", "APNs key id (the provider token's kid)")
	flag.StringVar(&opts.bundleID, "bundle-id", "", "app whose topics APNs accepts")
	flag.StringVar(&opts.saKeyFile, "sa-key", "", "service account private key (PKCS#8 PEM) whose public half checks assertions")
	flag.StringVar(&opts.clientEmail, "client-email", "", "service account email (the assertion's iss)")
	flag.StringVar(&opts.projectID, "project-id", "", "Firebase project served")
	flag.DurationVar(&opts.latency, "latency", 0, "wait before answering each push")
	flag.StringVar(&opts.recordFile, "record", "", "file each answered push is appended to")
	flag.StringVar(&opts.readyFile, "ready", "", "file the listeners' ports are written to")
	flag.StringVar(&opts.cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) here until stopped")
	flag.Parse()
	if err := run(opts); err != nil {
		log.Fatal(err)
	}
}

type options struct {
	certFile, keyFile                 string
	apnsKeyFile, teamID, keyID        string
	bundleID                          string
	saKeyFile, clientEmail, projectID string
	latency                           time.Duration
	recordFile, readyFile             string
	cpuProfile                        string
}

func run(opts options) error {
	recorder, err := newRecorder(opts.recordFile)
	if err != nil {
		return err
	}
	if opts.cpuProfile != "" {
		profile, err := os.Create(opts.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(profile); err != nil {
			return err
		}
	}
	// On SIGTERM (the bench's stop) the record and the profile are written out.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		recorder.flush()
		pprof.StopCPUProfile()
		os.Exit(0)
	}()
	apns, err := newAPNs(opts, recorder)
	if err != nil {
		return err
	}
	fcm, err := newFCM(opts, recorder)
	if err != nil {
		return err
	}
	// Loopback only: the fakes must never be reachable from another machine.
	apnsListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fcmListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ports := map[string]int{
		"apns": apnsListener.Addr().(*net.TCPAddr).Port,
		"fcm":  fcmListener.Addr().(*net.TCPAddr).Port,
	}
	if err := writeReady(opts.readyFile, ports); err != nil {
		return err
	}
	errs := make(chan error, 2)
	// APNs speaks HTTP/2 only; FCM (and Google's token endpoint) HTTP/1.1 too.
	go func() { errs <- serve(apnsListener, apns, opts, false, apns.forget) }()
	go func() { errs <- serve(fcmListener, fcm, opts, true, nil) }()
	return <-errs
}

// serve answers on listener; onClose (if any) is told the client's address of
// every connection that closed.
func serve(listener net.Listener, handler http.Handler, opts options, http1 bool,
	onClose func(client string)) error {
	protocols := new(http.Protocols)
	protocols.SetHTTP2(true)
	protocols.SetHTTP1(http1)
	server := &http.Server{
		Handler:     handler,
		IdleTimeout: idleTimeout,
		Protocols:   protocols,
		HTTP2:       &http.HTTP2Config{MaxConcurrentStreams: maxConcurrentStreams},
		ErrorLog:    log.New(os.Stderr, "", log.LstdFlags),
	}
	if onClose != nil {
		server.ConnState = func(conn net.Conn, state http.ConnState) {
			if state == http.StateClosed || state == http.StateHijacked {
				onClose(conn.RemoteAddr().String())
			}
		}
	}
	return server.ServeTLS(listener, opts.certFile, opts.keyFile)
}

func writeReady(path string, ports map[string]int) error {
	blob, err := json.Marshal(ports)
	if err != nil {
		return err
	}
	partial := path + ".partial"
	if err := os.WriteFile(partial, blob, 0o600); err != nil {
		return err
	}
	return os.Rename(partial, path)
}
