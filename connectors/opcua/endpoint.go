package opcua

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gopcua/opcua/ua"
)

// policyName returns the short name of a security policy URI ("Basic256Sha256").
func policyName(uri string) string {
	if i := strings.LastIndexByte(uri, '#'); i >= 0 {
		return uri[i+1:]
	}
	return uri
}

func modeName(m ua.MessageSecurityMode) string {
	for name, v := range securityModes {
		if v == m {
			return name
		}
	}
	return fmt.Sprintf("mode %d", m)
}

func tokenName(t ua.UserTokenType) string {
	switch t {
	case ua.UserTokenTypeAnonymous:
		return AuthAnonymous
	case ua.UserTokenTypeUserName:
		return AuthUsername
	case ua.UserTokenTypeCertificate:
		return AuthCertificate
	case ua.UserTokenTypeIssuedToken:
		return "issued_token"
	}
	return fmt.Sprintf("token type %d", t)
}

// userToken returns the token policy of ep that the source authenticates with: the first
// of type token, except that a password is never sent in clear text. A UserName token
// whose own SecurityPolicy (or, when it names none, the endpoint's) is None carries the
// password unencrypted (OPC-UA Part 4, 7.41.4 in 1.05, 7.36.4 in 1.04), so it is taken
// only on a channel that encrypts (SignAndEncrypt). plaintext reports that ep offers the
// type only that way.
func userToken(ep *ua.EndpointDescription, token ua.UserTokenType) (t *ua.UserTokenPolicy, plaintext bool) {
	for _, p := range ep.UserIdentityTokens {
		if p == nil || p.TokenType != token {
			continue
		}
		if token == ua.UserTokenTypeUserName && ep.SecurityMode != ua.MessageSecurityModeSignAndEncrypt {
			policy := p.SecurityPolicyURI
			if policy == "" {
				policy = ep.SecurityPolicyURI
			}
			if policy == "" || policy == ua.SecurityPolicyURINone {
				plaintext = true
				continue
			}
		}
		return p, false
	}
	return nil, plaintext
}

// selectEndpoint picks the endpoint with the policy and mode that also accepts the user
// token type; the highest security level wins among equals. The endpoint returned is a
// copy that offers only the token policy userToken chose, so the client library, which
// takes the first of the type, authenticates with that one. When none fits, the error
// lists what the server offers.
func selectEndpoint(eps []*ua.EndpointDescription, policyURI string, mode ua.MessageSecurityMode, token ua.UserTokenType) (*ua.EndpointDescription, error) {
	var best *ua.EndpointDescription
	var bestToken *ua.UserTokenPolicy
	var offered []string
	secMatch, plaintext := false, false
	for _, ep := range eps {
		if ep == nil {
			continue
		}
		var toks []string
		for _, t := range ep.UserIdentityTokens {
			if t == nil {
				continue
			}
			toks = append(toks, tokenName(t.TokenType))
		}
		slices.Sort(toks)
		toks = slices.Compact(toks)
		offered = append(offered, fmt.Sprintf("%s/%s (%s)", policyName(ep.SecurityPolicyURI), modeName(ep.SecurityMode), strings.Join(toks, ", ")))
		if ep.SecurityPolicyURI != policyURI || ep.SecurityMode != mode {
			continue
		}
		secMatch = true
		t, inClear := userToken(ep, token)
		plaintext = plaintext || inClear
		if t != nil && (best == nil || ep.SecurityLevel > best.SecurityLevel) {
			best, bestToken = ep, t
		}
	}
	if best != nil {
		ep := *best
		ep.UserIdentityTokens = []*ua.UserTokenPolicy{bestToken}
		return &ep, nil
	}
	slices.Sort(offered)
	offered = slices.Compact(offered)
	if len(offered) == 0 {
		return nil, fmt.Errorf("the server offers no endpoints")
	}
	if secMatch && plaintext {
		return nil, fmt.Errorf("no endpoint with security %s/%s accepts username authentication without sending the password in clear text "+
			"(its user token policy has security policy None and the channel does not encrypt); use security_mode SignAndEncrypt; the server offers: %s",
			policyName(policyURI), modeName(mode), strings.Join(offered, "; "))
	}
	if secMatch {
		return nil, fmt.Errorf("no endpoint with security %s/%s accepts %s authentication; the server offers: %s",
			policyName(policyURI), modeName(mode), tokenName(token), strings.Join(offered, "; "))
	}
	return nil, fmt.Errorf("no endpoint with security %s/%s; the server offers: %s",
		policyName(policyURI), modeName(mode), strings.Join(offered, "; "))
}
