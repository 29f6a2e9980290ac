package main

// KafkaSource and KafkaSink belong to knative-extensions/eventing-kafka-broker, whose Go module the module
// proxy does not serve (every version answers 403 there), so its types cannot be imported. What is checked
// instead, all with upstream code of the pinned release:
//
//   - the spec's shared parts are Knative's own types, strictly decoded and validated by their own methods:
//     SourceSpec (the sink Destination, ceOverrides) from knative.dev/pkg and DeliverySpec (retry,
//     backoffPolicy, backoffDelay, timeout with eventing's `delivery-timeout` feature, deadLetterSink) from
//     knative.dev/eventing, both at the release k8s/cluster.mk installs;
//   - the KafkaSource/KafkaSink-only fields are a closed list (strict decoding rejects any other field) whose
//     values follow eventing-kafka-broker's v1beta1/v1alpha1 webhook rules: topics and bootstrapServers
//     non-empty, consumers >= 1, initialOffset earliest|latest, ordering ordered|unordered, contentMode
//     binary|structured.

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	"sigs.k8s.io/yaml"
)

type kafkaSource struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              kafkaSourceSpec `json:"spec"`
}

type kafkaSourceSpec struct {
	Consumers         *int32                       `json:"consumers,omitempty"`
	BootstrapServers  []string                     `json:"bootstrapServers"`
	Topics            []string                     `json:"topics"`
	ConsumerGroup     string                       `json:"consumerGroup,omitempty"`
	InitialOffset     string                       `json:"initialOffset,omitempty"`
	Ordering          *string                      `json:"ordering,omitempty"`
	Delivery          *eventingduckv1.DeliverySpec `json:"delivery,omitempty"`
	duckv1.SourceSpec `json:",inline"`
}

type kafkaSink struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Topic             string   `json:"topic"`
		NumPartitions     *int32   `json:"numPartitions,omitempty"`
		ReplicationFactor *int16   `json:"replicationFactor,omitempty"`
		BootstrapServers  []string `json:"bootstrapServers"`
		ContentMode       *string  `json:"contentMode,omitempty"`
	} `json:"spec"`
}

func (c *checker) kafkaSource(gvk schema.GroupVersionKind, doc []byte) error {
	if gvk.Version != "v1beta1" {
		return fmt.Errorf("KafkaSource is served as sources.knative.dev/v1beta1, not %s", gvk.Version)
	}
	var src kafkaSource
	if err := yaml.UnmarshalStrict(doc, &src); err != nil {
		return err
	}
	ctx := c.cfg.webhookContext()
	spec := &src.Spec
	var errs *apis.FieldError
	errs = errs.Also(spec.SourceSpec.Validate(ctx).ViaField("spec"))
	if spec.Delivery != nil {
		errs = errs.Also(spec.Delivery.Validate(ctx).ViaField("spec", "delivery"))
	}
	if len(spec.Topics) == 0 {
		errs = errs.Also(apis.ErrMissingField("spec.topics"))
	}
	if len(spec.BootstrapServers) == 0 {
		errs = errs.Also(apis.ErrMissingField("spec.bootstrapServers"))
	}
	if spec.Consumers != nil && *spec.Consumers < 1 {
		errs = errs.Also(apis.ErrInvalidValue(*spec.Consumers, "spec.consumers"))
	}
	switch spec.InitialOffset {
	case "", "earliest", "latest":
	default:
		errs = errs.Also(apis.ErrInvalidValue(spec.InitialOffset, "spec.initialOffset"))
	}
	if spec.Ordering != nil {
		switch *spec.Ordering {
		case "ordered", "unordered":
		default:
			errs = errs.Also(apis.ErrInvalidValue(*spec.Ordering, "spec.ordering"))
		}
	}
	if errs != nil {
		return errs
	}
	return nil
}

func (c *checker) kafkaSink(gvk schema.GroupVersionKind, doc []byte) error {
	if gvk.Version != "v1alpha1" {
		return fmt.Errorf("KafkaSink is served as eventing.knative.dev/v1alpha1, not %s", gvk.Version)
	}
	var sink kafkaSink
	if err := yaml.UnmarshalStrict(doc, &sink); err != nil {
		return err
	}
	var errs *apis.FieldError
	if sink.Spec.Topic == "" {
		errs = errs.Also(apis.ErrMissingField("spec.topic"))
	}
	if len(sink.Spec.BootstrapServers) == 0 {
		errs = errs.Also(apis.ErrMissingField("spec.bootstrapServers"))
	}
	if mode := sink.Spec.ContentMode; mode != nil && *mode != "binary" && *mode != "structured" {
		errs = errs.Also(apis.ErrInvalidValue(*mode, "spec.contentMode"))
	}
	if errs != nil {
		return errs
	}
	return nil
}
