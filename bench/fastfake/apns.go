package main

import (
	"crypto"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Limits and rules of "Sending notification requests to APNs" and
// "Generating a remote notification", as willowe_tasks/testing/fake_apns.py
// and _apns_payload.py enforce them (which cite each).
const (
	// "For all other remote notifications, the maximum payload size is 4 KB
	// (4096 bytes)"; VoIP 5 KB (5120 bytes).
	maxPayloadBytes     = 4096
	maxVoIPPayloadBytes = 5120
	// "The value of this key must not exceed 64 bytes" (apns-collapse-id).
	maxCollapseIDBytes = 64
	// A provider token older than an hour is ExpiredProviderToken.
	tokenMaxAgeS = 3600
	// A connection's provider token may change at most every 20 minutes.
	tokenMinRotationS = 20 * 60
	// Tolerated clock difference for a token issued "in the future".
	clockSkewS = 60
	// Connections whose verified token is remembered before all are forgotten.
	connectionsKept = 4096
)

// topicSuffixes: what apns-topic must be per push type, after the bundle id.
var topicSuffixes = map[string]string{
	"alert": "", "background": "", "voip": ".voip", "complication": ".complication",
	"fileprovider": ".pushkit.fileprovider", "liveactivity": ".push-type.liveactivity",
	"location": ".location-query", "pushtotalk": ".voip-ptt",
	"widgets": ".push-type.widgets", "controls": ".push-type.controls", "mdm": "",
}

// singleHeaders must not be repeated (400 DuplicateHeaders).
var singleHeaders = []string{"authorization", "apns-topic", "apns-push-type",
	"apns-priority", "apns-expiration", "apns-collapse-id", "apns-id"}

var (
	devicePath = regexp.MustCompile(`^/3/device/([^/]*)$`)
	hexToken   = regexp.MustCompile(`^[0-9a-fA-F]{32,200}$`)
	uuidText   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

type apnsRejection struct {
	status int
	reason string
}

// connectionToken is the provider token a connection last used.
type connectionToken struct {
	token string
	iat   int64
}

type apnsServer struct {
	opts     options
	key      crypto.PublicKey
	recorder *recorder
	mu       sync.Mutex
	verified map[string]connectionToken // keyed by the client's address
}

func newAPNs(opts options, rec *recorder) (*apnsServer, error) {
	key, err := publicKeyOf(opts.apnsKeyFile)
	if err != nil {
		return nil, err
	}
	return &apnsServer{opts: opts, key: key, recorder: rec,
		verified: make(map[string]connectionToken)}, nil
}

func (s *apnsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	limit := maxPayloadBytes
	if r.Header.Get("apns-push-type") == "voip" {
		limit = maxVoIPPayloadBytes
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return // the client went away
	}
	if s.opts.latency > 0 {
		time.Sleep(s.opts.latency) // a goroutine per stream: others go on
	}
	token, payload, rejection := s.check(r, body, limit)
	apnsID := r.Header.Get("apns-id")
	if apnsID == "" {
		apnsID = newUUID()
	}
	w.Header().Set("apns-id", apnsID)
	status := http.StatusOK
	if rejection != nil {
		status = rejection.status
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"reason": rejection.reason})
	} else {
		w.WriteHeader(status)
	}
	notificationID, _ := payload["notification_id"].(string)
	s.recorder.record("apns", status, arrived, r.RemoteAddr, notificationID, token)
}

// forget drops what a closed connection's provider token was: a new
// connection from the same client port starts afresh, as with Apple.
func (s *apnsServer) forget(client string) {
	s.mu.Lock()
	delete(s.verified, client)
	s.mu.Unlock()
}

func (s *apnsServer) check(r *http.Request, body []byte, limit int) (string, map[string]any, *apnsRejection) {
	if r.ProtoMajor != 2 {
		return "", nil, &apnsRejection{505, "HTTPVersionNotSupported"}
	}
	match := devicePath.FindStringSubmatch(r.URL.Path)
	if match == nil {
		return "", nil, &apnsRejection{404, "BadPath"}
	}
	token := match[1]
	if r.Method != http.MethodPost {
		return token, nil, &apnsRejection{405, "MethodNotAllowed"}
	}
	for _, name := range singleHeaders {
		if len(r.Header.Values(name)) > 1 {
			return token, nil, &apnsRejection{400, "DuplicateHeaders"}
		}
	}
	if token == "" {
		return token, nil, &apnsRejection{400, "MissingDeviceToken"}
	}
	if rejection := s.checkProviderToken(r); rejection != nil {
		return token, nil, rejection
	}
	if !hexToken.MatchString(token) {
		return token, nil, &apnsRejection{400, "BadDeviceToken"}
	}
	if rejection := s.checkHeaders(r); rejection != nil {
		return token, nil, rejection
	}
	payload, rejection := checkPayload(body, limit)
	return token, payload, rejection
}

// checkProviderToken verifies the JWT's signature once per connection and
// token (an ES256 verification per push would be most of the fake's CPU);
// its age is judged on every push.
func (s *apnsServer) checkProviderToken(r *http.Request) *apnsRejection {
	header := r.Header.Get("authorization")
	if header == "" {
		return &apnsRejection{403, "MissingProviderToken"}
	}
	scheme, token, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "bearer") || token == "" {
		return &apnsRejection{403, "InvalidProviderToken"}
	}
	s.mu.Lock()
	known, seen := s.verified[r.RemoteAddr]
	s.mu.Unlock()
	if !seen || known.token != token {
		jwtHead, claims, err := verifyJWT(token, "ES256", s.key)
		if err != nil || jwtHead.Kid != s.opts.keyID || claims.Iss != s.opts.teamID || claims.Iat == nil {
			return &apnsRejection{403, "InvalidProviderToken"}
		}
		if seen && *claims.Iat-known.iat < tokenMinRotationS {
			return &apnsRejection{429, "TooManyProviderTokenUpdates"}
		}
		known = connectionToken{token: token, iat: *claims.Iat}
		s.mu.Lock()
		if len(s.verified) >= connectionsKept {
			clear(s.verified)
		}
		s.verified[r.RemoteAddr] = known
		s.mu.Unlock()
	}
	now := time.Now().Unix()
	if known.iat > now+clockSkewS {
		return &apnsRejection{403, "InvalidProviderToken"}
	}
	if now-known.iat > tokenMaxAgeS {
		return &apnsRejection{403, "ExpiredProviderToken"}
	}
	return nil
}

func (s *apnsServer) checkHeaders(r *http.Request) *apnsRejection {
	topic := r.Header.Get("apns-topic")
	pushType := r.Header.Get("apns-push-type")
	if topic == "" {
		return &apnsRejection{400, "MissingTopic"}
	}
	suffix, known := topicSuffixes[pushType]
	if !known {
		return &apnsRejection{400, "InvalidPushType"}
	}
	if (pushType != "mdm" && topic != s.opts.bundleID+suffix) || !strings.HasPrefix(topic, s.opts.bundleID) {
		return &apnsRejection{400, "TopicDisallowed"}
	}
	priority := r.Header.Get("apns-priority")
	if priority == "" {
		priority = "10"
	}
	if priority != "10" && priority != "5" && priority != "1" {
		return &apnsRejection{400, "BadPriority"}
	}
	// "the notification's POST request should contain the apns-push-type header
	// field with a value of background, and the apns-priority field with a
	// value of 5" (Pushing background updates to your app).
	if pushType == "background" && priority != "5" {
		return &apnsRejection{400, "BadPriority"}
	}
	if expiration := r.Header.Get("apns-expiration"); expiration != "" && !isDigits(expiration) {
		return &apnsRejection{400, "BadExpirationDate"}
	}
	if len(r.Header.Get("apns-collapse-id")) > maxCollapseIDBytes {
		return &apnsRejection{400, "BadCollapseId"}
	}
	if id := r.Header.Get("apns-id"); id != "" && !uuidText.MatchString(id) {
		return &apnsRejection{400, "BadMessageId"}
	}
	return nil
}

// checkPayload: non-empty, within the size limit, a JSON object with an "aps"
// object. (The Python fake also checks the types of the aps keys; the
// delivery tests hold the worker's payloads to that, so the bench needs only
// this much.)
func checkPayload(body []byte, limit int) (map[string]any, *apnsRejection) {
	if len(body) == 0 {
		return nil, &apnsRejection{400, "PayloadEmpty"}
	}
	if len(body) > limit {
		return nil, &apnsRejection{413, "PayloadTooLarge"}
	}
	var payload map[string]any
	if json.Unmarshal(body, &payload) != nil {
		return nil, &apnsRejection{400, "BadPayload"}
	}
	if _, ok := payload["aps"].(map[string]any); !ok {
		return payload, &apnsRejection{400, "BadPayload"}
	}
	return payload, nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// newUUID is a random (version 4) UUID in upper case, as APNs writes apns-id.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
