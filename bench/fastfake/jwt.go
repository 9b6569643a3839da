package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
)

// jwtHeader and jwtClaims hold the fields the fakes judge (RFC 7519).
type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

type jwtClaims struct {
	Iss   string          `json:"iss"`
	Iat   *int64          `json:"iat"`
	Exp   *int64          `json:"exp"`
	Aud   json.RawMessage `json:"aud"`
	Scope string          `json:"scope"`
}

var errBadToken = errors.New("malformed or badly signed token")

// verifyJWT checks a compact JWT's signature with alg and key, and returns its
// header and claims.
func verifyJWT(token, alg string, key crypto.PublicKey) (jwtHeader, jwtClaims, error) {
	var header jwtHeader
	var claims jwtClaims
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return header, claims, errBadToken
	}
	if err := decodeSegment(parts[0], &header); err != nil || header.Alg != alg {
		return header, claims, errBadToken
	}
	signature, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return header, claims, errBadToken
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !signatureValid(alg, key, digest[:], signature) {
		return header, claims, errBadToken
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return header, claims, errBadToken
	}
	return header, claims, nil
}

func signatureValid(alg string, key crypto.PublicKey, digest, signature []byte) bool {
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		// JWS ES256: R and S as two 32-byte big-endian integers (RFC 7518 §3.4).
		if alg != "ES256" || len(signature) != 64 {
			return false
		}
		r := new(big.Int).SetBytes(signature[:32])
		s := new(big.Int).SetBytes(signature[32:])
		return ecdsa.Verify(k, digest, r, s)
	case *rsa.PublicKey:
		return alg == "RS256" && rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, signature) == nil
	}
	return false
}

func decodeSegment(segment string, into any) error {
	blob, err := base64.RawURLEncoding.DecodeString(segment)
	if err != nil {
		return err
	}
	return json.Unmarshal(blob, into)
}

// audiences reads "aud", a string or an array of strings (RFC 7519 §4.1.3).
func (c jwtClaims) audiences() []string {
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		return []string{one}
	}
	var many []string
	_ = json.Unmarshal(c.Aud, &many)
	return many
}

// publicKeyOf reads a PKCS#8 private key file and returns its public half.
func publicKeyOf(path string) (crypto.PublicKey, error) {
	blob, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(blob)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", path)
	}
	return signer.Public(), nil
}
