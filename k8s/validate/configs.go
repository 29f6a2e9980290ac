package main

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strings"

	skaffoldlatest "github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/schema/latest"
	skaffoldyaml "github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/yaml"
	"github.com/openfaas/faas-cli/stack"
	"github.com/robfig/cron/v3"
	yamlv2 "gopkg.in/yaml.v2"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kindconfig "sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	goyaml "sigs.k8s.io/yaml/goyaml.v3"
)

// checkKind decodes a kind cluster config as kind's loader does (pkg/internal/apis/config/encoding: the
// v1alpha4 types, known fields only) and applies kind's own defaults.
func (c *checker) checkKind(path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		c.add(path, "Cluster", "", err)
		return
	}
	var tm struct {
		Kind       string `yaml:"kind"`
		APIVersion string `yaml:"apiVersion"`
	}
	if err := goyaml.Unmarshal(raw, &tm); err != nil {
		c.add(path, "Cluster", "", err)
		return
	}
	if tm.APIVersion != "kind.x-k8s.io/v1alpha4" || tm.Kind != "Cluster" {
		c.add(path, tm.Kind, "", fmt.Errorf("unknown apiVersion/kind %s %s for kind's loader", tm.APIVersion, tm.Kind))
		return
	}
	cluster := &kindconfig.Cluster{}
	decoder := goyaml.NewDecoder(bytes.NewReader(raw))
	decoder.KnownFields(true)
	if err := decoder.Decode(cluster); err != nil {
		c.add(path, "Cluster", "", err)
		return
	}
	kindconfig.SetDefaultsCluster(cluster)
	var problems []string
	for i, node := range cluster.Nodes {
		for j, m := range node.ExtraPortMappings {
			if m.ContainerPort < 1 || m.ContainerPort > 65535 || m.HostPort < 0 || m.HostPort > 65535 {
				problems = append(problems, fmt.Sprintf("nodes[%d].extraPortMappings[%d]: port out of range", i, j))
			}
		}
	}
	var err2 error
	if len(problems) > 0 {
		err2 = fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	c.add(path, "Cluster.kind.x-k8s.io/v1alpha4", cluster.Name, err2)
}

// checkSkaffold decodes skaffold.yaml as skaffold's parser does (pkg/skaffold/yaml's UnmarshalStrict: known
// fields only) into the schema of the pinned release's latest version (pkg/skaffold/schema/latest). The file
// must be written in that version: skaffold would upgrade an older one in memory, hiding what it dropped.
// (schema.ParseConfig, which knows every older version too, would pull in a third of the binary's build.)
func (c *checker) checkSkaffold(path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		c.add(path, "Config.skaffold", "", err)
		return
	}
	var version struct {
		APIVersion string `yaml:"apiVersion"`
	}
	if err := skaffoldyaml.Unmarshal(raw, &version); err != nil {
		c.add(path, "Config.skaffold", "", err)
		return
	}
	if version.APIVersion != skaffoldlatest.Version {
		c.add(path, "Config.skaffold", "", fmt.Errorf("apiVersion %q: skaffold %s's schema is %s",
			version.APIVersion, versions()["github.com/GoogleContainerTools/skaffold/v2"], skaffoldlatest.Version))
		return
	}
	cfg := &skaffoldlatest.SkaffoldConfig{}
	if err := skaffoldyaml.UnmarshalStrict(raw, cfg); err != nil {
		c.add(path, "Config."+skaffoldlatest.Version, "", err)
		return
	}
	c.add(path, "Config."+cfg.GetVersion(), cfg.Metadata.Name, nil)
}

// checkStack parses stack.yml with faas-cli's own parser (stack.ParseYAMLData: provider, schema version),
// decodes it strictly into faas-cli's stack.Services (an unknown field is an error, where faas-cli would drop
// it), and checks what faas-netes turns into Kubernetes fields: names (DNS-1123 labels), labels, annotations,
// resource quantities, and the cron-connector's schedules (robfig/cron's standard parser, which it uses).
func (c *checker) checkStack(path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		c.add(path, "stack", "", err)
		return
	}
	services, err := stack.ParseYAMLData(raw, "", "", false)
	if err != nil {
		c.add(path, "stack", "", err)
		return
	}
	var strict stack.Services
	if err := yamlv2.UnmarshalStrict(raw, &strict); err != nil {
		c.add(path, "stack", "", err)
		return
	}
	names := make([]string, 0, len(services.Functions))
	for name := range services.Functions {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c.add(path, "Function.openfaas", name, checkFunction(name, services.Functions[name]))
	}
}

func checkFunction(name string, fn stack.Function) error {
	var errs field.ErrorList
	root := field.NewPath("functions", name)
	for _, msg := range validation.IsDNS1123Label(name) {
		errs = append(errs, field.Invalid(root, name, msg))
	}
	if fn.Image == "" {
		errs = append(errs, field.Required(root.Child("image"), ""))
	}
	if fn.Labels != nil {
		errs = append(errs, metav1validation.ValidateLabels(*fn.Labels, root.Child("labels"))...)
	}
	annotations := map[string]string{}
	if fn.Annotations != nil {
		annotations = *fn.Annotations
		for key := range annotations {
			for _, msg := range validation.IsQualifiedName(key) {
				errs = append(errs, field.Invalid(root.Child("annotations"), key, msg))
			}
		}
	}
	if topic := annotations["topic"]; strings.Contains(topic, "cron-function") {
		schedule, ok := annotations["schedule"]
		if !ok {
			errs = append(errs, field.Required(root.Child("annotations", "schedule"), "the cron-connector needs it"))
		} else if _, err := cron.ParseStandard(schedule); err != nil {
			errs = append(errs, field.Invalid(root.Child("annotations", "schedule"), schedule, err.Error()))
		}
	}
	for what, res := range map[string]*stack.FunctionResources{"limits": fn.Limits, "requests": fn.Requests} {
		if res == nil {
			continue
		}
		for unit, value := range map[string]string{"memory": res.Memory, "cpu": res.CPU} {
			if value == "" {
				continue
			}
			if _, err := resource.ParseQuantity(value); err != nil {
				errs = append(errs, field.Invalid(root.Child(what, unit), value, err.Error()))
			}
		}
	}
	for key := range fn.Environment {
		for _, msg := range validation.IsEnvVarName(key) {
			errs = append(errs, field.Invalid(root.Child("environment"), key, msg))
		}
	}
	for _, secret := range fn.Secrets {
		for _, msg := range validation.IsDNS1123Subdomain(secret) {
			errs = append(errs, field.Invalid(root.Child("secrets"), secret, msg))
		}
	}
	return errs.ToAggregate()
}
