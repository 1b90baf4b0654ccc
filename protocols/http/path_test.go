package http

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestCleanPath(t *testing.T) {
	tests := map[string]struct {
		in, want string
		wantErr  bool
	}{
		// Already canonical: returned as is.
		"root":              {in: "/", want: "/"},
		"typical":           {in: "/v1/orders/123/items", want: "/v1/orders/123/items"},
		"trailing slash":    {in: "/v1/orders/", want: "/v1/orders/"},
		"sub-delims":        {in: "/a/b!$&'()*+,=:@c", want: "/a/b!$&'()*+,=:@c"},
		"google custom":     {in: "/v1/things:batchGet", want: "/v1/things:batchGet"},
		"reserved kept":     {in: "/a%3Fb%23c%3Bd", want: "/a%3Fb%23c%3Bd"},
		"lone %25":          {in: "/100%25", want: "/100%25"},
		"%25 then non-hex":  {in: "/100%25x", want: "/100%25x"},
		"three dots":        {in: "/a/.../b", want: "/a/.../b"},
		"dot in name":       {in: "/a/.b/c./..d", want: "/a/.b/c./..d"},
		"utf-8 encoded":     {in: "/caf%C3%A9", want: "/caf%C3%A9"},
		"U+FFFD is valid":   {in: "/%EF%BF%BD", want: "/%EF%BF%BD"},
		"four-byte rune":    {in: "/%F0%9F%98%80", want: "/%F0%9F%98%80"},
		"tilde and dash":    {in: "/~user/a-b_c", want: "/~user/a-b_c"},
		"encoded space":     {in: "/a%20b", want: "/a%20b"},
		"encoded percent 2": {in: "/%25/41", want: "/%25/41"},

		// Normalized.
		"lowercase hex":          {in: "/a%3ab", want: "/a%3Ab"},
		"mixed-case hex":         {in: "/a%c3%A9", want: "/a%C3%A9"},
		"decoded unreserved":     {in: "/%41%62%63%2D%5F%7E%30", want: "/Abc-_~0"},
		"raw utf-8":              {in: "/café", want: "/caf%C3%A9"},
		"raw and encoded utf-8":  {in: "/caf%C3\xa9", want: "/caf%C3%A9"},
		"raw space":              {in: "/a b", want: "/a%20b"},
		"raw brackets and pipe":  {in: "/a[b]|{c}^`\"<>", want: "/a%5Bb%5D%7C%7Bc%7D%5E%60%22%3C%3E"},
		"double slash":           {in: "//v1//orders///x", want: "/v1/orders/x"},
		"only slashes":           {in: "////", want: "/"},
		"leading double slash":   {in: "//evil.example/x", want: "/evil.example/x"},
		"trailing double slash":  {in: "/a//", want: "/a/"},
		"dot":                    {in: "/a/./b", want: "/a/b"},
		"trailing dot":           {in: "/a/b/.", want: "/a/b/"},
		"root dot":               {in: "/.", want: "/"},
		"dot dot":                {in: "/a/b/../c", want: "/a/c"},
		"trailing dot dot":       {in: "/a/b/..", want: "/a/"},
		"dot dot to root":        {in: "/a/..", want: "/"},
		"dot dot after slashes":  {in: "/a//../b", want: "/b"},
		"encoded dot dot":        {in: "/v1/orders/%2e%2e/admin", want: "/v1/admin"},
		"upper encoded dot dot":  {in: "/v1/orders/%2E%2E/admin", want: "/v1/admin"},
		"half-encoded dot dot":   {in: "/v1/orders/.%2e/admin", want: "/v1/admin"},
		"encoded dot":            {in: "/a/%2e/b", want: "/a/b"},
		"dot dot in the middle":  {in: "/a/b/c/../../d/./e/../f", want: "/a/d/f"},
		"dot dot at depth":       {in: "/a/b/c/d/../../../..", want: "/"},
		"dots then trailing":     {in: "/a/b/../", want: "/a/"},
		"encoded tilde and dots": {in: "/%7euser/%2E", want: "/~user/"},

		// Refused.
		"empty":                       {in: "", wantErr: true},
		"relative":                    {in: "v1/orders", wantErr: true},
		"asterisk":                    {in: "*", wantErr: true},
		"absolute URL":                {in: "http://x/a", wantErr: true},
		"above root":                  {in: "/..", wantErr: true},
		"above root later":            {in: "/a/../..", wantErr: true},
		"above root encoded":          {in: "/%2e%2e/etc/passwd", wantErr: true},
		"above root trailing slash":   {in: "/../", wantErr: true},
		"above root after slashes":    {in: "///../a", wantErr: true},
		"encoded slash":               {in: "/v1/orders%2f..%2fadmin", wantErr: true},
		"encoded slash upper":         {in: "/a%2Fb", wantErr: true},
		"encoded backslash":           {in: "/a%5cb", wantErr: true},
		"encoded backslash upper":     {in: "/a%5Cb", wantErr: true},
		"raw backslash":               {in: "/a\\..\\b", wantErr: true},
		"NUL":                         {in: "/a\x00b", wantErr: true},
		"encoded NUL":                 {in: "/a%00b", wantErr: true},
		"tab":                         {in: "/a\tb", wantErr: true},
		"encoded CR LF":               {in: "/a%0d%0aSet-Cookie:x", wantErr: true},
		"DEL":                         {in: "/a\x7f", wantErr: true},
		"encoded DEL":                 {in: "/a%7F", wantErr: true},
		"C1 control encoded":          {in: "/a%C2%85", wantErr: true},
		"C1 control raw":              {in: "/a\xc2\x85", wantErr: true},
		"lone percent":                {in: "/a%", wantErr: true},
		"short percent":               {in: "/a%4", wantErr: true},
		"short percent then slash":    {in: "/a%4/b", wantErr: true},
		"non-hex percent":             {in: "/a%zz", wantErr: true},
		"IIS %u":                      {in: "/a%u002e%u002e/b", wantErr: true},
		"percent percent":             {in: "/a%%32%65", wantErr: true},
		"double-encoded dot":          {in: "/a/%252e%252e/b", wantErr: true},
		"double-encoded slash":        {in: "/a%252fb", wantErr: true},
		"double encoding built":       {in: "/a%25%34%31", wantErr: true},
		"overlong dot":                {in: "/%c0%ae%c0%ae/x", wantErr: true},
		"overlong slash":              {in: "/a%c0%afb", wantErr: true},
		"overlong three-byte":         {in: "/a%e0%80%ae", wantErr: true},
		"truncated rune":              {in: "/caf%C3", wantErr: true},
		"truncated rune then ascii":   {in: "/caf%C3a", wantErr: true},
		"truncated rune before slash": {in: "/caf%C3/%A9", wantErr: true},
		"lone continuation":           {in: "/a%A9", wantErr: true},
		"surrogate":                   {in: "/a%ED%A0%80", wantErr: true},
		"above U+10FFFF":              {in: "/a%F4%90%80%80", wantErr: true},
		"raw invalid utf-8":           {in: "/a\xff", wantErr: true},
		"path parameter":              {in: "/admin;jsessionid=x/secret", wantErr: true},
		"dot dot parameter":           {in: "/v1/..;/admin", wantErr: true},
		"raw question mark":           {in: "/a?b", wantErr: true},
		"raw hash":                    {in: "/a#b", wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := CleanPath(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("CleanPath(%q): got %q, want an error", tt.in, got)
				}
				if !errors.Is(err, ErrAmbiguousPath) {
					t.Errorf("CleanPath(%q): got error %v, want one wrapping ErrAmbiguousPath", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("CleanPath(%q): got error %v, want %q", tt.in, err, tt.want)
			}
			if got != tt.want {
				t.Errorf("CleanPath(%q): got %q, want %q", tt.in, got, tt.want)
			}
			checkClean(t, got)
		})
	}
}

// TestCleanPathForwarded: the canonical path survives the trip through
// net/url that the reverse proxy makes (Path decoded, RawPath canonical),
// so the upstream receives exactly what policy matched.
func TestCleanPathForwarded(t *testing.T) {
	for _, in := range []string{"/v1/orders/123", "/a%3Fb", "/caf%C3%A9/x y", "/a%20b/%25", "/x:y@z!$&'()*+,=", "/a%3Bb"} {
		t.Run(in, func(t *testing.T) {
			clean, err := CleanPath(in)
			if err != nil {
				t.Fatal(err)
			}
			decoded, err := url.PathUnescape(clean)
			if err != nil {
				t.Fatalf("url.PathUnescape(%q): %v", clean, err)
			}
			u := url.URL{Path: decoded, RawPath: clean}
			if got := u.EscapedPath(); got != clean {
				t.Errorf("URL{Path: %q, RawPath: %q}.EscapedPath(): got %q, want %q", decoded, clean, got, clean)
			}
		})
	}
}

// TestCleanPathErrorOffset: the error names the reason and where it is.
func TestCleanPathErrorOffset(t *testing.T) {
	_, err := CleanPath("/v1/orders%2Fx")
	if got, want := err.Error(), "cleaning path: ambiguous request path: encoded slash (%2F) at byte 10"; got != want {
		t.Errorf("error: got %q, want %q", got, want)
	}
}

func TestCleanPathTruncated(t *testing.T) {
	for _, in := range validPaths {
		for i := range len(in) + 1 {
			got, err := CleanPath(in[:i])
			if err != nil {
				if !errors.Is(err, ErrAmbiguousPath) {
					t.Errorf("CleanPath(%q): got error %v, want one wrapping ErrAmbiguousPath", in[:i], err)
				}
				continue
			}
			checkClean(t, got)
		}
	}
}

func TestCleanPathNoAllocs(t *testing.T) {
	for _, in := range []string{"/", "/v1/orders/123/items", "/a%3Fb/caf%C3%A9/", "/x:y@z"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = CleanPath(in) }); n != 0 {
			t.Errorf("CleanPath(%q) of a clean path: got %v allocations, want 0", in, n)
		}
	}
}

func TestCleanGRPCMethod(t *testing.T) {
	tests := map[string]struct {
		in      string
		wantErr bool
	}{
		"simple":               {in: "/orders.v1.Orders/Get"},
		"no package":           {in: "/Orders/Get"},
		"underscores, digits":  {in: "/my_pkg.v2.Svc_1/Do_It2"},
		"health":               {in: "/grpc.health.v1.Health/Check"},
		"reflection":           {in: "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"},
		"empty":                {in: "", wantErr: true},
		"root":                 {in: "/", wantErr: true},
		"no leading slash":     {in: "orders.v1.Orders/Get", wantErr: true},
		"two leading slashes":  {in: "//orders.v1.Orders/Get", wantErr: true},
		"no method":            {in: "/orders.v1.Orders", wantErr: true},
		"empty method":         {in: "/orders.v1.Orders/", wantErr: true},
		"empty service":        {in: "//Get", wantErr: true},
		"three segments":       {in: "/orders.v1.Orders/Get/x", wantErr: true},
		"trailing slash":       {in: "/orders.v1.Orders/Get/", wantErr: true},
		"dot segment":          {in: "/./Get", wantErr: true},
		"dot dot segment":      {in: "/orders.v1.Orders/../Admin/Get", wantErr: true},
		"dot dot service":      {in: "/../Get", wantErr: true},
		"dot method":           {in: "/orders.v1.Orders/.", wantErr: true},
		"leading dot":          {in: "/.orders.Orders/Get", wantErr: true},
		"trailing dot":         {in: "/orders.Orders./Get", wantErr: true},
		"double dot":           {in: "/orders..Orders/Get", wantErr: true},
		"dot in method":        {in: "/orders.Orders/Get.x", wantErr: true},
		"percent-encoded":      {in: "/orders.v1.Orders/%47et", wantErr: true},
		"encoded slash":        {in: "/orders.v1.Orders%2FGet", wantErr: true},
		"dash":                 {in: "/orders-v1.Orders/Get", wantErr: true},
		"space":                {in: "/orders.Orders/Get All", wantErr: true},
		"NUL":                  {in: "/orders.Orders/Get\x00", wantErr: true},
		"backslash":            {in: "/orders.Orders\\Get", wantErr: true},
		"query":                {in: "/orders.Orders/Get?x=1", wantErr: true},
		"semicolon":            {in: "/orders.Orders/Get;x", wantErr: true},
		"non-ascii":            {in: "/orders.Orders/Gét", wantErr: true},
		"glob characters":      {in: "/orders.Orders/Get*", wantErr: true},
		"uppercase everything": {in: "/ORDERS.ORDERS/GET"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := CleanGRPCMethod(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("CleanGRPCMethod(%q): got %q, want an error", tt.in, got)
				}
				if !errors.Is(err, ErrInvalidGRPCMethod) {
					t.Errorf("CleanGRPCMethod(%q): got error %v, want one wrapping ErrInvalidGRPCMethod", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("CleanGRPCMethod(%q): got error %v, want success", tt.in, err)
			}
			if got != tt.in {
				t.Errorf("CleanGRPCMethod(%q): got %q, want it unchanged", tt.in, got)
			}
		})
	}
}

func TestCleanGRPCMethodTruncated(t *testing.T) {
	for _, in := range validMethods {
		for i := range len(in) + 1 {
			if got, err := CleanGRPCMethod(in[:i]); err == nil {
				checkMethod(t, in[:i], got)
			} else if !errors.Is(err, ErrInvalidGRPCMethod) {
				t.Errorf("CleanGRPCMethod(%q): got error %v, want one wrapping ErrInvalidGRPCMethod", in[:i], err)
			}
		}
	}
}

func BenchmarkCleanPath(b *testing.B) {
	for name, in := range map[string]string{
		"clean":   "/v1/orders/123/items",
		"encoded": "/v1/orders/%31%32%33/items%3a/./x/../y",
		"long":    "/" + strings.Repeat("segment/", 32) + "end",
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := CleanPath(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCleanGRPCMethod(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CleanGRPCMethod("/orders.v1.Orders/GetOrder"); err != nil {
			b.Fatal(err)
		}
	}
}
