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

// selectEndpoint picks the endpoint with the policy and mode that also accepts the user
// token type; the highest security level wins among equals. When none fits, the error lists
// what the server offers.
func selectEndpoint(eps []*ua.EndpointDescription, policyURI string, mode ua.MessageSecurityMode, token ua.UserTokenType) (*ua.EndpointDescription, error) {
	var best *ua.EndpointDescription
	var offered []string
	secMatch := false
	for _, ep := range eps {
		if ep == nil {
			continue
		}
		var toks []string
		accepts := false
		for _, t := range ep.UserIdentityTokens {
			if t == nil {
				continue
			}
			toks = append(toks, tokenName(t.TokenType))
			if t.TokenType == token {
				accepts = true
			}
		}
		slices.Sort(toks)
		toks = slices.Compact(toks)
		offered = append(offered, fmt.Sprintf("%s/%s (%s)", policyName(ep.SecurityPolicyURI), modeName(ep.SecurityMode), strings.Join(toks, ", ")))
		if ep.SecurityPolicyURI != policyURI || ep.SecurityMode != mode {
			continue
		}
		secMatch = true
		if accepts && (best == nil || ep.SecurityLevel > best.SecurityLevel) {
			best = ep
		}
	}
	if best != nil {
		return best, nil
	}
	slices.Sort(offered)
	offered = slices.Compact(offered)
	if len(offered) == 0 {
		return nil, fmt.Errorf("the server offers no endpoints")
	}
	if secMatch {
		return nil, fmt.Errorf("no endpoint with security %s/%s accepts %s authentication; the server offers: %s",
			policyName(policyURI), modeName(mode), tokenName(token), strings.Join(offered, "; "))
	}
	return nil, fmt.Errorf("no endpoint with security %s/%s; the server offers: %s",
		policyName(policyURI), modeName(mode), strings.Join(offered, "; "))
}
