package qemu

// Checks the -object and -machine arguments the launcher emits against QEMU's own QAPI schema
// (qapi/qom.json and qapi/sockets.json, vendored in testdata/qapi; source and version in
// testdata/qapi/README.md). Machine properties (confidential-guest-support, memory-backend,
// kernel-irqchip) are QOM class properties, not in QAPI: for them the test checks that they
// reference an -object of the right kind and that the memory backend's size equals -m.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/sealpod/sealpod/runtime-shim/qemu/internal/qapischema"
)

var qapiGoldenDir = flag.String("qapi.goldendir", "testdata", "directory of the *.args golden files the QAPI test checks")

// qapiMinQEMU is the oldest QEMU the SNP/TDX launch supports: the first release with both
// sev-snp-guest (9.1) and tdx-guest (10.1). Every schema member we use must exist there.
const qapiMinQEMU = "10.1"

func loadQAPI(t *testing.T) *qapischema.Schema {
	t.Helper()
	s, err := qapischema.LoadFiles(filepath.Join("testdata", "qapi", "qom.json"), filepath.Join("testdata", "qapi", "sockets.json"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// versionLE reports a <= b for "X.Y" versions.
func versionLE(a, b string) bool {
	pa, pb := strings.SplitN(a, ".", 2), strings.SplitN(b, ".", 2)
	ma, _ := strconv.Atoi(pa[0])
	mb, _ := strconv.Atoi(pb[0])
	if ma != mb {
		return ma < mb
	}
	na, _ := strconv.Atoi(pa[1])
	nb, _ := strconv.Atoi(pb[1])
	return na <= nb
}

var (
	reNByte  = regexp.MustCompile(`(\d+)-byte`)
	reSHA384 = regexp.MustCompile(`(?i)sha-?384`)
)

// checkDocValue applies what a member's schema doc says about a string value: base64-encoded
// (must decode), of N bytes ("N-byte" or a SHA384 digest: 48).
func checkDocValue(m qapischema.Member, v string) error {
	if m.Type != "str" || !strings.Contains(strings.ToLower(m.Doc), "base64") {
		return nil
	}
	b, err := base64.StdEncoding.Strict().DecodeString(v)
	if err != nil {
		return fmt.Errorf("%q is not base64 (schema: %q): %v", v, m.Doc, err)
	}
	want := -1
	if n := reNByte.FindStringSubmatch(m.Doc); n != nil {
		want, _ = strconv.Atoi(n[1])
	} else if reSHA384.MatchString(m.Doc) {
		want = 48
	}
	if want >= 0 && len(b) != want {
		return fmt.Errorf("decodes to %d bytes, schema says %d (%q)", len(b), want, m.Doc)
	}
	return nil
}

// qapiObject is one -object argument as checked.
type qapiObject struct {
	Type, ID string
	Props    map[string]string // key=value syntax only
}

// checkObjectArg checks one -object argument (key=value or JSON syntax) against the schema.
func checkObjectArg(s *qapischema.Schema, arg string) (qapiObject, error) {
	o := qapiObject{Props: map[string]string{}}
	var given []string
	values := map[string]any{}
	if strings.HasPrefix(arg, "{") {
		d := json.NewDecoder(strings.NewReader(arg))
		d.UseNumber()
		var obj map[string]any
		if err := d.Decode(&obj); err != nil {
			return o, fmt.Errorf("JSON: %w", err)
		}
		o.Type, _ = obj["qom-type"].(string)
		o.ID, _ = obj["id"].(string)
		if err := s.CheckJSON("ObjectOptions", false, obj); err != nil {
			return o, fmt.Errorf("-object %s (%s): %w", o.Type, s.ObjectStruct(o.Type), err)
		}
		for k, v := range obj {
			given = append(given, k)
			values[k] = v
		}
	} else {
		parts := strings.Split(arg, ",")
		o.Type = parts[0]
		if strings.Contains(o.Type, "=") {
			return o, fmt.Errorf("-object %q: first element must be the type", arg)
		}
		given = append(given, "qom-type")
		for _, p := range parts[1:] {
			k, v, ok := strings.Cut(p, "=")
			if !ok {
				return o, fmt.Errorf("-object %s: %q is not key=value", o.Type, p)
			}
			if k == "id" {
				o.ID = v
			}
			o.Props[k] = v
			values[k] = v
			given = append(given, k)
		}
	}
	props, err := s.ObjectProperties(o.Type)
	if err != nil {
		return o, fmt.Errorf("-object %s: %w", o.Type, err)
	}
	st := s.ObjectStruct(o.Type)
	if ps := s.Structs[st]; ps != nil && ps.Since != "" && !versionLE(ps.Since, qapiMinQEMU) {
		return o, fmt.Errorf("-object %s: %s is since QEMU %s, newer than %s", o.Type, st, ps.Since, qapiMinQEMU)
	}
	ms := make([]qapischema.Member, 0, len(props))
	for _, m := range props {
		ms = append(ms, m)
	}
	sort.Strings(given)
	if err := qapischema.CheckMembers(ms, given); err != nil {
		return o, fmt.Errorf("-object %s (%s): %w", o.Type, st, err)
	}
	for _, k := range given {
		m := props[k]
		if m.Since != "" && !versionLE(m.Since, qapiMinQEMU) {
			return o, fmt.Errorf("-object %s: property %s is since QEMU %s, newer than %s", o.Type, k, m.Since, qapiMinQEMU)
		}
		if k == "qom-type" {
			continue
		}
		v := values[k]
		if str, ok := v.(string); ok {
			if !strings.HasPrefix(arg, "{") {
				if err := s.CheckKeyval(m.Type, m.List, str); err != nil {
					return o, fmt.Errorf("-object %s: property %s (%s): %w", o.Type, k, m.Type, err)
				}
			}
			if err := checkDocValue(m, str); err != nil {
				return o, fmt.Errorf("-object %s: property %s: %w", o.Type, k, err)
			}
		}
	}
	return o, nil
}

// confidentialTypes are the QOM types implementing confidential-guest-support.
var confidentialTypes = map[string]bool{"sev-guest": true, "sev-snp-guest": true, "tdx-guest": true, "pef-guest": true, "s390-pv-guest": true}

// checkQAPIArgs checks every -object of an argument list, the -machine references to them and
// the memory backend size; it returns the objects it checked.
func checkQAPIArgs(s *qapischema.Schema, args []string) ([]qapiObject, []error) {
	var (
		errs    []error
		objs    []qapiObject
		machine string
		memMiB  string
	)
	byID := map[string]qapiObject{}
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-object":
			o, err := checkObjectArg(s, args[i+1])
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if _, dup := byID[o.ID]; dup {
				errs = append(errs, fmt.Errorf("-object id %q used twice", o.ID))
			}
			byID[o.ID] = o
			objs = append(objs, o)
		case "-machine":
			machine = args[i+1]
		case "-m":
			memMiB = args[i+1]
		}
	}
	for _, p := range strings.Split(machine, ",")[1:] {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "confidential-guest-support":
			if o, ok := byID[v]; !ok || !confidentialTypes[o.Type] {
				errs = append(errs, fmt.Errorf("-machine confidential-guest-support=%s: no -object with that id of a confidential-guest-support type (got %q)", v, o.Type))
			}
		case "memory-backend":
			o, ok := byID[v]
			if !ok || !strings.HasPrefix(o.Type, "memory-backend-") {
				errs = append(errs, fmt.Errorf("-machine memory-backend=%s: no memory-backend-* object with that id (got %q)", v, o.Type))
				continue
			}
			if o.Props["size"] != memMiB+"M" {
				errs = append(errs, fmt.Errorf("-object %s,id=%s: size=%s, but -m %s (MiB): QEMU requires them equal", o.Type, v, o.Props["size"], memMiB))
			}
		}
	}
	return objs, errs
}

func TestQAPISchemaReader(t *testing.T) {
	const src = `# -*- Mode: Python -*-
{ 'include': 'common.json' }   # a comment with "quotes" and 'ticks'
##
# @Base:
#
# @a: member a (since 9.0)
#
# Since: 8.0
##
{ 'struct': 'Base', 'data': { '*a': 'uint32' } }
##
# @Sub:
#
# @b: 32-byte, base64-encoded blob
#
# @c: a list
#
# Since: 9.1
##
{ 'struct': 'Sub', 'base': 'Base',
  'data': { 'b': 'str',   # trailing comment
            '*c': ['uint16'],
            '*d': { 'type': 'bool', 'if': 'CONFIG_LINUX' } } }
{ 'enum': 'Kind', 'data': [ 'sub', { 'name': 'other', 'if': 'X' } ] }
{ 'union': 'U', 'base': { 'kind': 'Kind', 'id': 'str' }, 'discriminator': 'kind',
  'data': { 'sub': 'Sub' } }
{ 'command': 'ignored', 'data': { 'x': 'str' } }
`
	s := &qapischema.Schema{Structs: map[string]*qapischema.Struct{}, Enums: map[string]*qapischema.Enum{}, Unions: map[string]*qapischema.Union{}}
	if err := s.Add("test.json", []byte(src)); err != nil {
		t.Fatal(err)
	}
	ms, err := s.StructMembers("Sub")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, fmt.Sprintf("%s:%s:list=%v:opt=%v:since=%s", m.Name, m.Type, m.List, m.Optional, m.Since))
	}
	want := []string{"a:uint32:list=false:opt=true:since=9.0", "b:str:list=false:opt=false:since=",
		"c:uint16:list=true:opt=true:since=", "d:bool:list=false:opt=true:since="}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Sub members:\n got %v\nwant %v", got, want)
	}
	if s.Structs["Sub"].Since != "9.1" || !strings.Contains(ms[1].Doc, "32-byte, base64") {
		t.Errorf("docs: since %q, b doc %q", s.Structs["Sub"].Since, ms[1].Doc)
	}
	if err := s.CheckEnum("Kind", "other"); err != nil {
		t.Error(err)
	}
	um, err := s.UnionMembers("U", "sub")
	if err != nil || len(um) != 6 {
		t.Errorf("UnionMembers(U, sub) = %v, %v; want kind, id and Sub's 4", um, err)
	}
	if _, err := s.UnionMembers("U", "nope"); err == nil {
		t.Error("UnionMembers accepted a discriminator value outside the enum")
	}
	for name, bad := range map[string]string{
		"double quotes": `{ 'struct': "X", 'data': {} }`,
		"unterminated":  "{ 'struct': 'X, 'data': {} }",
		"unbalanced":    "{ 'struct': 'X', 'data': {} } }",
		"open doc":      "##\n# @X:\n{ 'struct': 'X', 'data': {} }",
		"bare word":     "struct X",
		"bad base":      "{ 'struct': 'X', 'base': [ 'Y' ], 'data': {} }",
	} {
		s := &qapischema.Schema{Structs: map[string]*qapischema.Struct{}, Enums: map[string]*qapischema.Enum{}, Unions: map[string]*qapischema.Union{}}
		if err := s.Add(name, []byte(bad)); err == nil {
			t.Errorf("%s: parsed %q without error", name, bad)
		}
	}
}

func TestQAPIKeyvalTypes(t *testing.T) {
	s := loadQAPI(t)
	for _, v := range [][3]string{{"9.1", "10.1", "true"}, {"10.1", "10.1", "true"}, {"10.2", "10.1", "false"}, {"11.0", "10.1", "false"}} {
		if got := strconv.FormatBool(versionLE(v[0], v[1])); got != v[2] {
			t.Errorf("versionLE(%s, %s) = %s", v[0], v[1], got)
		}
	}
	for _, c := range []struct {
		typ, v string
		ok     bool
	}{
		{"bool", "on", true}, {"bool", "false", true}, {"bool", "y", true}, {"bool", "On", false}, {"bool", "1", false},
		{"uint32", "51", true}, {"uint32", "0x33", true}, {"uint32", "4294967296", false}, {"uint32", "-1", false},
		{"uint64", "0x30000", true}, {"uint64", "196608", true}, {"uint64", "0x", false}, {"uint64", "1_000", false},
		{"int", "-5", true}, {"int8", "128", false},
		{"size", "512M", true}, {"size", "1.5G", true}, {"size", "4096", true}, {"size", "512Q", false}, {"size", "16E", false},
		{"str", "anything", true},
		{"SocketAddressType", "vsock", true}, {"SocketAddressType", "tcp", false},
		{"SocketAddress", "x", false}, {"NoSuchType", "x", false},
	} {
		err := s.CheckKeyval(c.typ, false, c.v)
		if (err == nil) != c.ok {
			t.Errorf("CheckKeyval(%s, %q) = %v, want ok=%v", c.typ, c.v, err, c.ok)
		}
	}
}

// TestQAPIVendoredSchema pins the facts of the vendored schema the launcher relies on, so a
// wrong or truncated vendoring fails here rather than passing the object checks vacuously.
func TestQAPIVendoredSchema(t *testing.T) {
	s := loadQAPI(t)
	for _, typ := range []string{"sev-snp-guest", "tdx-guest", "pef-guest", "memory-backend-memfd", "rng-random"} {
		if err := s.CheckEnum("ObjectType", typ); err != nil {
			t.Error(err)
		}
	}
	for typ, want := range map[string]string{"sev-snp-guest": "SevSnpGuestProperties", "tdx-guest": "TdxGuestProperties",
		"memory-backend-memfd": "MemoryBackendMemfdProperties", "rng-random": "RngRandomProperties", "pef-guest": ""} {
		if got := s.ObjectStruct(typ); got != want {
			t.Errorf("ObjectOptions[%s] = %q, want %q", typ, got, want)
		}
	}
	check := func(qomType, prop, typ string) {
		t.Helper()
		props, err := s.ObjectProperties(qomType)
		if err != nil {
			t.Fatal(err)
		}
		if m, ok := props[prop]; !ok || m.Type != typ {
			t.Errorf("%s.%s: %+v (present %v), want type %s", qomType, prop, m, ok, typ)
		}
	}
	check("sev-snp-guest", "kernel-hashes", "bool") // from base SevCommonProperties
	check("sev-snp-guest", "cbitpos", "uint32")
	check("sev-snp-guest", "policy", "uint64")
	check("sev-snp-guest", "host-data", "str")
	check("tdx-guest", "mrconfigid", "str")
	check("tdx-guest", "quote-generation-socket", "SocketAddress")
	check("memory-backend-memfd", "size", "size") // from base MemoryBackendProperties
	check("memory-backend-memfd", "share", "bool")
	if st := s.Structs["TdxGuestProperties"]; st == nil || st.Since != "10.1" {
		t.Errorf("TdxGuestProperties since %+v, want 10.1 (the first QEMU with tdx-guest)", st)
	}
}

// TestQAPIGoldenObjects checks every golden command line, both as the builder produces it now
// and as stored in the golden file, against the schema.
func TestQAPIGoldenObjects(t *testing.T) {
	s := loadQAPI(t)
	// wantTypes are the -object types each TEE's command line must contain (so the check
	// cannot pass on a command line that lost its TEE object).
	wantTypes := map[string][]string{
		"snp":     {"sev-snp-guest", "memory-backend-memfd", "rng-random"},
		"tdx":     {"tdx-guest", "rng-random"},
		"pef":     {"pef-guest", "rng-random"},
		"sim":     {"rng-random"},
		"sim-tdx": {"rng-random"},
	}
	for name, cfg := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			cmd, err := cfg.Command()
			if err != nil {
				t.Fatal(err)
			}
			golden, err := os.ReadFile(filepath.Join(*qapiGoldenDir, name+".args"))
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(string(golden), "\n"), "\n")
			for src, args := range map[string][]string{"built": cmd.Args, name + ".args": lines[1:]} {
				objs, errs := checkQAPIArgs(s, args)
				for _, err := range errs {
					t.Errorf("%s: %v", src, err)
				}
				have := map[string]bool{}
				for _, o := range objs {
					have[o.Type] = true
				}
				for _, typ := range wantTypes[string(cfg.TEE)] {
					if !have[typ] {
						t.Errorf("%s: no valid -object %s checked", src, typ)
					}
				}
			}
		})
	}
}

// TestQAPIRejects shows the check fails on command lines QEMU would refuse.
func TestQAPIRejects(t *testing.T) {
	s := loadQAPI(t)
	cases := goldenCases(t)
	argv := func(name string) []string {
		c := cases[name]
		cmd, err := c.Command()
		if err != nil {
			t.Fatal(err)
		}
		return cmd.Args
	}
	replace := func(args []string, old, new string) []string {
		out := append([]string(nil), args...)
		n := 0
		for i := range out {
			if strings.Contains(out[i], old) {
				out[i] = strings.Replace(out[i], old, new, 1)
				n++
			}
		}
		if n == 0 {
			t.Fatalf("%q not in %v", old, args)
		}
		return out
	}
	snp, tdx := argv("snp"), argv("tdx")
	b64 := base64.StdEncoding.EncodeToString
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"snp renamed kernel-hashes", replace(snp, "kernel-hashes=on", "kernel-hash=on"), `unknown property "kernel-hash"`},
		{"snp bool", replace(snp, "kernel-hashes=on", "kernel-hashes=1"), "is not a bool"},
		{"snp policy", replace(snp, "policy=0x30000", "policy=0x3000z"), "not an integer (uint64)"},
		{"snp cbitpos range", replace(snp, "cbitpos=51", "cbitpos=4294967296"), "out of range for uint32"},
		{"snp missing required", replace(snp, "reduced-phys-bits=1,", ""), `required property "reduced-phys-bits" missing`},
		{"snp host-data not base64", replace(snp, "host-data=", "host-data=!"), "is not base64"},
		{"snp host-data length", replace(snp, "host-data=", "host-data="+b64(make([]byte, 3))), "schema says 32"},
		{"snp object type", replace(snp, "sev-snp-guest,", "sev-snp-guest-x,"), "not a value of enum ObjectType"},
		{"snp dangling cgs", replace(snp, "confidential-guest-support=sev0", "confidential-guest-support=sev1"), "confidential-guest-support=sev1"},
		{"snp memory size", replace(snp, "size=512M", "size=256M"), "QEMU requires them equal"},
		{"snp memfd share", replace(snp, "share=true", "share=maybe"), "is not a bool"},
		{"snp property of another object", replace(snp, "kernel-hashes=on", "kernel-hashes=on,prealloc=on"), `unknown property "prealloc"`},
		{"tdx JSON bool as string", replace(tdx, `"sept-ve-disable":true`, `"sept-ve-disable":"on"`), "want a JSON bool"},
		{"tdx mrconfigid length", replace(tdx, `"mrconfigid":"`, `"mrconfigid":"AAAA`), "schema says 48"},
		{"tdx socket type", replace(tdx, `"type":"vsock"`, `"type":"tcp"`), "not a value of enum SocketAddressType"},
		{"tdx cid number", replace(tdx, `"cid":"2"`, `"cid":2`), "want a string"},
		{"tdx unknown", replace(tdx, `"sept-ve-disable":true`, `"sept-ve-disable":true,"debug":true`), `unknown property "debug"`},
	} {
		_, errs := checkQAPIArgs(s, c.args)
		var msgs []string
		for _, e := range errs {
			msgs = append(msgs, e.Error())
		}
		if all := strings.Join(msgs, "\n"); !strings.Contains(all, c.want) {
			t.Errorf("%s: errors %q, want one containing %q", c.name, all, c.want)
		}
	}
	// Stricter than QEMU (g_base64_decode is lenient): a value must be canonical base64.
	if err := checkDocValue(qapischema.Member{Type: "str", Doc: "32-byte, base64-encoded"}, strings.TrimRight(b64(bytes.Repeat([]byte{1}, 32)), "=")); err == nil {
		t.Error("unpadded base64 accepted")
	}
}
