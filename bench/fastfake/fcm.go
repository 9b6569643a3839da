package main

import (
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Rules of FCM HTTP v1 and Google's token endpoint, as
// willowe_tasks/testing/fake_fcm.py, _fcm_messages.py and _google_oauth.py
// enforce them (which cite each).
const (
	tokenPath = "/token"
	// Scope a service account must ask for to send messages.
	fcmScope = "https://www.googleapis.com/auth/firebase.messaging"
	// Audience google-auth puts in assertions, whatever the token_uri.
	googleTokenAudience = "https://oauth2.googleapis.com/token"
	// OAuth grant type of a service-account assertion (RFC 7523).
	jwtBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	// Lifetime of issued access tokens, as Google's.
	accessTokenLifetimeS = 3600
	// Clock difference tolerated in an assertion's iat/exp.
	assertionLeewayS = 60
	// "4096 bytes for most messages ... This includes both the keys and the
	// values" (FCM error codes, INVALID_ARGUMENT): data and notification.
	maxMessageBytes = 4096
	// "The maximum time to live supported is 4 weeks" (AndroidConfig.ttl).
	maxTTLS = 2_419_200
	// Longest registration token accepted, characters (as the Python fake's).
	maxRegistrationTokenChars = 4096
	// Bodies larger than this are not read: far over any valid message.
	maxBodyBytes = 1 << 20
)

var (
	sendPath          = regexp.MustCompile(`^/v1/projects/([^/]+)/messages:send$`)
	registrationToken = regexp.MustCompile(`^[A-Za-z0-9_:\-]+$`)
	duration          = regexp.MustCompile(`^(\d{1,10})(?:\.(\d{1,9}))?s$`)
	// data keys FCM keeps for itself: "from", "message_type", any word
	// starting with "google" or "gcm" (REST reference, Message.data).
	reservedDataKeys = []string{"from", "notification", "message_type"}
)

type fcmServer struct {
	opts     options
	key      crypto.PublicKey
	recorder *recorder
	mu       sync.Mutex
	tokens   map[string]time.Time // access token -> when it expires
	sent     atomic.Int64
}

func newFCM(opts options, rec *recorder) (*fcmServer, error) {
	key, err := publicKeyOf(opts.saKeyFile)
	if err != nil {
		return nil, err
	}
	return &fcmServer{opts: opts, key: key, recorder: rec, tokens: make(map[string]time.Time)}, nil
}

func (s *fcmServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == tokenPath {
		s.grant(w, r)
		return
	}
	arrived := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes))
	if err != nil {
		return // the client went away
	}
	if s.opts.latency > 0 {
		time.Sleep(s.opts.latency) // a goroutine per stream: others go on
	}
	answer, token, notificationID := s.send(r, body)
	writeJSON(w, answer.status, answer.body)
	s.recorder.record("fcm", answer.status, arrived, r.RemoteAddr, notificationID, token)
}

// androidConfig and fcmMessage hold the parts of a message the fake judges.
type androidConfig struct {
	TTL          *string        `json:"ttl"`
	Data         map[string]any `json:"data"`
	Notification map[string]any `json:"notification"`
}

type fcmMessage struct {
	Token        *string        `json:"token"`
	Topic        *string        `json:"topic"`
	Condition    *string        `json:"condition"`
	Data         map[string]any `json:"data"`
	Notification map[string]any `json:"notification"`
	Android      *androidConfig `json:"android"`
}

// fcmAnswer is a status and the JSON body that goes with it.
type fcmAnswer struct {
	status int
	body   any
}

func (s *fcmServer) send(r *http.Request, body []byte) (fcmAnswer, string, string) {
	match := sendPath.FindStringSubmatch(r.URL.Path)
	if match == nil || r.Method != http.MethodPost {
		return fcmAnswer{404, googleError(404, "", "Requested entity was not found.", "")}, "", ""
	}
	if !s.authorized(r.Header.Get("authorization")) {
		return fcmAnswer{401, googleError(401, "", "Request had invalid authentication credentials. "+
			"Expected OAuth 2 access token, login cookie or other valid authentication credential.", "")}, "", ""
	}
	if match[1] != s.opts.projectID {
		return fcmAnswer{403, googleError(403, "", "Permission 'cloudmessaging.messages.create' denied on resource.", "")}, "", ""
	}
	var request struct {
		Message *fcmMessage `json:"message"`
	}
	if json.Unmarshal(body, &request) != nil || request.Message == nil {
		return *invalid("Request contains an invalid argument.", "message"), "", ""
	}
	message := request.Message
	token, notificationID := "", ""
	if message.Token != nil {
		token = *message.Token
	}
	if id, ok := message.Data["notification_id"].(string); ok {
		notificationID = id
	}
	if rejection := validate(message); rejection != nil {
		return *rejection, token, notificationID
	}
	name := fmt.Sprintf("projects/%s/messages/0:%d%%%s", match[1], s.sent.Add(1), randomHex(8))
	return fcmAnswer{200, map[string]string{"name": name}}, token, notificationID
}

func validate(message *fcmMessage) *fcmAnswer {
	if message.Token == nil || message.Topic != nil || message.Condition != nil {
		// The worker sends to device tokens only; topics are not served here.
		return invalid("Exactly one of token, topic or condition must be set.", "message")
	}
	// Go's regexp allows at most 1000 repeats: the length is checked apart.
	if len(*message.Token) > maxRegistrationTokenChars || !registrationToken.MatchString(*message.Token) {
		return invalid("The registration token is not a valid FCM registration token", "message.token")
	}
	android := message.Android
	if android == nil {
		android = &androidConfig{}
	}
	size := 0
	for _, data := range []map[string]any{message.Data, android.Data} {
		for key, value := range data {
			text, ok := value.(string)
			if !ok {
				return invalid("Invalid value at 'message.data' (TYPE_STRING).", "message.data")
			}
			lowered := strings.ToLower(key)
			if slices.Contains(reservedDataKeys, lowered) || strings.HasPrefix(lowered, "google") ||
				strings.HasPrefix(lowered, "gcm") {
				return invalid("Invalid data payload key: "+key, "message.data")
			}
			size += len(key) + len(text)
		}
	}
	for _, notification := range []map[string]any{message.Notification, android.Notification} {
		for key, value := range notification {
			size += len(key) + jsonSize(value)
		}
	}
	if size > maxMessageBytes {
		return invalid("Android message is too big", "message")
	}
	if android.TTL != nil && !validTTL(*android.TTL) {
		return invalid("Invalid value at 'message.android.ttl'.", "message.android.ttl")
	}
	return nil
}

func validTTL(ttl string) bool {
	match := duration.FindStringSubmatch(ttl)
	if match == nil {
		return false
	}
	var seconds int64
	fmt.Sscan(match[1], &seconds)
	return seconds < maxTTLS || (seconds == maxTTLS && strings.Trim(match[2], "0") == "")
}

func jsonSize(value any) int {
	if text, ok := value.(string); ok {
		return len(text)
	}
	blob, _ := json.Marshal(value)
	return len(blob)
}

func (s *fcmServer) authorized(header string) bool {
	scheme, token, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "bearer") {
		return false
	}
	s.mu.Lock()
	expires, known := s.tokens[token]
	s.mu.Unlock()
	return known && time.Now().Before(expires)
}

// grant answers a token request as oauth2.googleapis.com/token does.
func (s *fcmServer) grant(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.ParseForm() != nil || r.PostForm.Get("grant_type") != jwtBearerGrant {
		writeJSON(w, 400, oauthError("unsupported_grant_type", "Invalid grant_type."))
		return
	}
	_, claims, err := verifyJWT(r.PostForm.Get("assertion"), "RS256", s.key)
	if err != nil || claims.Iss != s.opts.clientEmail || claims.Iat == nil || claims.Exp == nil {
		writeJSON(w, 400, oauthError("invalid_grant", "Invalid JWT Signature."))
		return
	}
	now := time.Now().Unix()
	audience := []string{googleTokenAudience, "https://" + r.Host + tokenPath}
	if !slices.ContainsFunc(claims.audiences(), func(a string) bool { return slices.Contains(audience, a) }) ||
		*claims.Exp < now-assertionLeewayS || *claims.Iat > now+assertionLeewayS {
		writeJSON(w, 400, oauthError("invalid_grant", "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."))
		return
	}
	if *claims.Exp-*claims.Iat > accessTokenLifetimeS {
		writeJSON(w, 400, oauthError("invalid_grant", "Invalid JWT: lifetime over one hour."))
		return
	}
	if !slices.Contains(strings.Fields(claims.Scope), fcmScope) {
		writeJSON(w, 400, oauthError("invalid_scope", "The scope does not allow sending messages."))
		return
	}
	access := "ya29.fake-" + randomHex(24)
	s.mu.Lock()
	s.tokens[access] = time.Now().Add(accessTokenLifetimeS * time.Second)
	s.mu.Unlock()
	writeJSON(w, 200, map[string]any{"access_token": access, "expires_in": accessTokenLifetimeS,
		"token_type": "Bearer"})
}

// Google's canonical status name per HTTP status.
var googleStatus = map[int]string{400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED",
	403: "PERMISSION_DENIED", 404: "NOT_FOUND"}

func invalid(message, field string) *fcmAnswer {
	return &fcmAnswer{400, googleError(400, "INVALID_ARGUMENT", message, field)}
}

func googleError(status int, errorCode, message, field string) map[string]any {
	var details []map[string]any
	if errorCode != "" {
		details = append(details, map[string]any{
			"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": errorCode})
	}
	if field != "" {
		details = append(details, map[string]any{
			"@type":           "type.googleapis.com/google.rpc.BadRequest",
			"fieldViolations": []map[string]string{{"field": field, "description": message}}})
	}
	errorBody := map[string]any{"code": status, "message": message, "status": googleStatus[status]}
	if details != nil {
		errorBody["details"] = details
	}
	return map[string]any{"error": errorBody}
}

func oauthError(code, description string) map[string]string {
	return map[string]string{"error": code, "error_description": description}
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("content-type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
