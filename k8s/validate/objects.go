package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	clientscheme "k8s.io/client-go/kubernetes/scheme"
	eventingfeature "knative.dev/eventing/pkg/apis/feature"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	"knative.dev/pkg/apis"
	servingconfig "knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	autoscalerconfig "knative.dev/serving/pkg/autoscaler/config"
	"sigs.k8s.io/yaml"
)

// clusterConfig is what the cluster's Knative ConfigMaps say (k8s/cluster/knative-config-*.yaml, the patches
// `make cluster-up` applies), as the webhooks would see it.
type clusterConfig struct {
	serving  *servingconfig.Config
	eventing eventingfeature.Flags
	strimzi  *strimziSchemas
	scheme   *runtime.Scheme
	decoder  runtime.Decoder
}

// configMapData reads the `data` of one ConfigMap patch; a missing file is an empty map (the release defaults).
func configMapData(dir, name string) (map[string]string, error) {
	raw, err := os.ReadFile(filepath.Join(dir, name))
	if os.IsNotExist(err) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	var patch struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.UnmarshalStrict(raw, &patch); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if patch.Data == nil {
		patch.Data = map[string]string{}
	}
	return patch.Data, nil
}

func loadClusterConfig(dir, strimziDir string) (*clusterConfig, error) {
	features, err := configMapData(dir, "knative-config-features.yaml")
	if err != nil {
		return nil, err
	}
	autoscaler, err := configMapData(dir, "knative-config-autoscaler.yaml")
	if err != nil {
		return nil, err
	}
	defaults, err := configMapData(dir, "knative-config-defaults.yaml")
	if err != nil {
		return nil, err
	}
	eventingFeatures, err := configMapData(dir, "knative-eventing-config-features.yaml")
	if err != nil {
		return nil, err
	}
	cfg := &clusterConfig{serving: &servingconfig.Config{}}
	if cfg.serving.Features, err = servingconfig.NewFeaturesConfigFromMap(features); err != nil {
		return nil, fmt.Errorf("config-features: %w", err)
	}
	if cfg.serving.Autoscaler, err = autoscalerconfig.NewConfigFromMap(autoscaler); err != nil {
		return nil, fmt.Errorf("config-autoscaler: %w", err)
	}
	if cfg.serving.Defaults, err = servingconfig.NewDefaultsConfigFromMap(defaults); err != nil {
		return nil, fmt.Errorf("config-defaults: %w", err)
	}
	if cfg.eventing, err = eventingfeature.NewFlagsConfigFromMap(eventingFeatures); err != nil {
		return nil, fmt.Errorf("eventing config-features: %w", err)
	}
	if strimziDir != "" {
		if cfg.strimzi, err = loadStrimziSchemas(strimziDir); err != nil {
			return nil, err
		}
	}
	// built-in kinds from client-go's scheme, plus the Knative types the webhooks decode into
	cfg.scheme = runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientscheme.AddToScheme, servingv1.AddToScheme, sourcesv1.AddToScheme,
	} {
		if err := add(cfg.scheme); err != nil {
			return nil, err
		}
	}
	// strict: unknown and duplicate fields are errors, as `kubectl apply --validate=strict` makes them
	cfg.decoder = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, cfg.scheme, cfg.scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
	return cfg, nil
}

// webhookContext is the context Knative's admission webhooks validate a new object in.
func (c *clusterConfig) webhookContext() context.Context {
	ctx := servingconfig.ToContext(context.Background(), c.serving)
	ctx = eventingfeature.ToContext(ctx, c.eventing)
	return apis.WithinCreate(ctx)
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// checkObject dispatches one YAML document to the upstream validator of its kind.
func (c *checker) checkObject(doc []byte) (string, string, error) {
	var tm typeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return "", "", fmt.Errorf("not a Kubernetes object: %w", err)
	}
	name := tm.Metadata.Name
	if tm.Metadata.Namespace != "" {
		name = tm.Metadata.Namespace + "/" + name
	}
	kind := tm.Kind
	gv, err := schema.ParseGroupVersion(tm.APIVersion)
	if err != nil || tm.Kind == "" {
		return kind, name, fmt.Errorf("apiVersion %q kind %q: %v", tm.APIVersion, tm.Kind, err)
	}
	gvk := gv.WithKind(tm.Kind)
	kind = tm.Kind + "." + gvk.GroupVersion().String()
	switch {
	case gvk == servingv1.SchemeGroupVersion.WithKind("Service"):
		return kind, name, c.knativeService(doc)
	case gvk == sourcesv1.SchemeGroupVersion.WithKind("PingSource"):
		return kind, name, c.pingSource(doc)
	case gvk.Group == "sources.knative.dev" && gvk.Kind == "KafkaSource":
		return kind, name, c.kafkaSource(gvk, doc)
	case gvk.Group == "eventing.knative.dev" && gvk.Kind == "KafkaSink":
		return kind, name, c.kafkaSink(gvk, doc)
	case gvk.Group == "kafka.strimzi.io":
		return kind, name, c.strimzi(gvk, doc)
	case isBuiltin(gvk.Group) && c.cfg.scheme.Recognizes(gvk):
		return kind, name, c.builtin(doc)
	}
	return kind, name, errNoValidator
}

func isBuiltin(group string) bool {
	return group == "" || group == "apps" || group == "batch" || group == "policy" ||
		group == "autoscaling" || strings.HasSuffix(group, ".k8s.io")
}

// decodeStrict decodes into the registered upstream type; a strict-decoding error (unknown or duplicate
// field) is a failure, as it is for `kubectl apply --validate=strict`.
func (c *checker) decodeStrict(doc []byte) (runtime.Object, error) {
	obj, _, err := c.cfg.decoder.Decode(doc, nil, nil)
	if err != nil {
		return nil, err
	}
	return obj, nil
}

func (c *checker) builtin(doc []byte) error {
	_, err := c.decodeStrict(doc)
	return err
}

func (c *checker) knativeService(doc []byte) error {
	obj, err := c.decodeStrict(doc)
	if err != nil {
		return err
	}
	svc := obj.(*servingv1.Service)
	ctx := c.cfg.webhookContext()
	svc.SetDefaults(ctx)
	if ferr := svc.Validate(ctx); ferr != nil {
		return ferr
	}
	return nil
}

func (c *checker) pingSource(doc []byte) error {
	obj, err := c.decodeStrict(doc)
	if err != nil {
		return err
	}
	src := obj.(*sourcesv1.PingSource)
	ctx := c.cfg.webhookContext()
	src.SetDefaults(ctx)
	if ferr := src.Validate(ctx); ferr != nil {
		return ferr
	}
	return nil
}
