// Command validate checks the shop's cluster files with the upstream projects' own Go code, pinned in go.mod to
// the releases k8s/cluster.mk installs (k8s/cluster.mk reads the Knative version from this go.mod):
//
//   - every rendered object (kustomize output, the OpenFaaS path's objects) strictly decoded into its upstream
//     type: Knative Service (SetDefaults + Validate with the cluster's config-features, config-autoscaler and
//     config-defaults), PingSource (eventing's SetDefaults + Validate with config-features), built-in kinds
//     (k8s.io/api, unknown or duplicate fields rejected), KafkaSource and KafkaSink (see kafka.go), Strimzi's
//     kinds (see strimzi.go);
//   - kind-config.yaml with kind's own v1alpha4 types, decoded as kind's loader does (known fields only) and
//     defaulted by kind's SetDefaultsCluster;
//   - skaffold.yaml with skaffold's schema.ParseConfig (every schema version skaffold knows, known fields only);
//   - stack.yml with faas-cli's stack.ParseYAMLData, strictly decoded into faas-cli's stack.Services.
//
// Output: one line per object, "ok <what>" or "FAIL <what>: <upstream message>"; with -json one JSON object per
// line. Exit status 1 when anything failed, 2 on a usage error. Nothing here dials anything.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"
)

// Result is what one check decided about one object.
type Result struct {
	Source string `json:"source"`
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Error  string `json:"error,omitempty"`
	// Unchecked: no upstream validator exists for the kind (see strimzi.go); neither passed nor failed
	Unchecked bool `json:"unchecked,omitempty"`
}

type checker struct {
	cfg     *clusterConfig
	results []Result
}

func (c *checker) add(source, kind, name string, err error) {
	r := Result{Source: source, Kind: kind, Name: name}
	if err != nil {
		r.Error = err.Error()
	}
	if errors.Is(err, errUnchecked) {
		r.Error, r.Unchecked = "", true
	}
	c.results = append(c.results, r)
}

// splitDocuments cuts a YAML stream at its "---" lines, dropping empty documents.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var current bytes.Buffer
	flush := func() {
		if len(bytes.TrimSpace(stripComments(current.Bytes()))) > 0 {
			docs = append(docs, append([]byte(nil), current.Bytes()...))
		}
		current.Reset()
	}
	scanner := bufio.NewScanner(bytes.NewReader(data))
	scanner.Buffer(make([]byte, 1024*1024), 64*1024*1024)
	for scanner.Scan() {
		line := scanner.Text()
		if strings.TrimRight(line, " \t") == "---" || strings.HasPrefix(line, "--- ") {
			flush()
			continue
		}
		current.WriteString(line)
		current.WriteByte('\n')
	}
	flush()
	return docs
}

func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

func readInput(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

// versions prints the upstream modules this binary was built with, for the test that keeps them one setting
// with k8s/cluster.mk.
func versions() map[string]string {
	out := map[string]string{"go": "unknown"}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return out
	}
	out["go"] = info.GoVersion
	for _, dep := range info.Deps {
		out[dep.Path] = dep.Version
	}
	return out
}

func main() {
	configDir := flag.String("cluster-config", "k8s/cluster", "the Knative ConfigMap patches cluster-up applies")
	kindConfig := flag.String("kind", "", "a kind cluster config to check")
	skaffoldConfig := flag.String("skaffold", "", "a skaffold.yaml to check")
	stackFile := flag.String("stack", "", "an OpenFaaS stack.yml to check")
	strimziCRDs := flag.String("strimzi-crds", "", "the Strimzi release's CRD files (a directory)")
	jsonOut := flag.Bool("json", false, "one JSON object per result")
	printVersions := flag.Bool("versions", false, "print the upstream module versions built in, as JSON")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: validate [flags] [manifests.yaml ... | -]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *printVersions {
		mods := versions()
		keys := make([]string, 0, len(mods))
		for k := range mods {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		ordered := make(map[string]string, len(mods))
		for _, k := range keys {
			ordered[k] = mods[k]
		}
		_ = json.NewEncoder(os.Stdout).Encode(ordered)
		return
	}
	cfg, err := loadClusterConfig(*configDir, *strimziCRDs)
	if err != nil {
		fmt.Fprintf(os.Stderr, "validate: %v\n", err)
		os.Exit(2)
	}
	c := &checker{cfg: cfg}
	if *kindConfig != "" {
		c.checkKind(*kindConfig)
	}
	if *skaffoldConfig != "" {
		c.checkSkaffold(*skaffoldConfig)
	}
	if *stackFile != "" {
		c.checkStack(*stackFile)
	}
	for _, path := range flag.Args() {
		data, err := readInput(path)
		if err != nil {
			c.add(path, "", "", err)
			continue
		}
		for _, doc := range splitDocuments(data) {
			kind, name, err := c.checkObject(doc)
			c.add(path, kind, name, err)
		}
	}
	failed := 0
	out := bufio.NewWriter(os.Stdout)
	for _, r := range c.results {
		if r.Error != "" {
			failed++
		}
		if *jsonOut {
			line, _ := json.Marshal(r)
			out.Write(line)
			out.WriteByte('\n')
			continue
		}
		what := strings.TrimPrefix(fmt.Sprintf("%s %s/%s", r.Source, r.Kind, r.Name), " ")
		if r.Error != "" {
			fmt.Fprintf(out, "FAIL %s: %s\n", what, r.Error)
		} else if r.Unchecked {
			fmt.Fprintf(out, "--   %s (no upstream validator)\n", what)
		} else {
			fmt.Fprintf(out, "ok   %s\n", what)
		}
	}
	out.Flush()
	if len(c.results) == 0 {
		fmt.Fprintln(os.Stderr, "validate: nothing to check")
		os.Exit(2)
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "validate: %d of %d failed\n", failed, len(c.results))
		os.Exit(1)
	}
}

var (
	errNoValidator = errors.New("no validator for this apiVersion/kind")
	// errUnchecked: a kind this program knows but has no upstream code for (Strimzi); not a failure
	errUnchecked = errors.New("unchecked")
)
