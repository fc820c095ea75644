package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// configFlag names the flag of a configuration file. A command that defines
// it reads the file in parseFlags: its keys are the command's flag names.
const configFlag = "config"

// configEnv is the environment variable that names the configuration file
// when --config is not given.
const configEnv = "LAKEHOUSE_CONFIG"

// configPath returns the configuration file named by args (--config F,
// --config=F, -config ...) or else by the environment; "" when none.
func configPath(args []string) (string, error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != configFlag {
			continue
		}
		if hasVal {
			return val, nil
		}
		if i+1 >= len(args) {
			return "", fmt.Errorf("flag needs an argument: -%s", configFlag)
		}
		return args[i+1], nil
	}
	return os.Getenv(configEnv), nil
}

// configValue is one key of a configuration file.
type configValue struct {
	value string
	line  int
}

// loadConfigFile reads a YAML configuration file: a mapping from flag names
// to scalar values (catalog-props may also be a mapping of properties).
// Errors name the file, the line and the key.
func loadConfigFile(path string) (map[string]configValue, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) || len(bytes.TrimSpace(data)) == 0 {
			return map[string]configValue{}, nil, nil // an empty file sets nothing
		}
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return map[string]configValue{}, nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("%s:%d: want a mapping of flag names to values", path, root.Line)
	}
	out := make(map[string]configValue, len(root.Content)/2)
	var order []string
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, nil, fmt.Errorf("%s:%d: keys are flag names", path, k.Line)
		}
		if prev, dup := out[k.Value]; dup {
			return nil, nil, fmt.Errorf("%s:%d: key %q repeats line %d", path, k.Line, k.Value, prev.line)
		}
		val, err := configScalar(k.Value, v)
		if err != nil {
			return nil, nil, fmt.Errorf("%s:%d: key %q: %w", path, v.Line, k.Value, err)
		}
		out[k.Value] = configValue{val, k.Line}
		order = append(order, k.Value)
	}
	return out, order, nil
}

func configScalar(key string, v *yaml.Node) (string, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return "", nil
		}
		return v.Value, nil
	case yaml.MappingNode:
		if key != "catalog-props" {
			return "", errors.New("want a single value, not a mapping")
		}
		// catalog-props: {s3.endpoint: http://..., s3.region: us-east-1}
		kvs := make([]string, 0, len(v.Content)/2)
		for i := 0; i+1 < len(v.Content); i += 2 {
			pk, pv := v.Content[i], v.Content[i+1]
			if pk.Kind != yaml.ScalarNode || pv.Kind != yaml.ScalarNode {
				return "", errors.New("want property: value pairs")
			}
			if strings.ContainsAny(pk.Value+pv.Value, ",") {
				return "", fmt.Errorf("property %q: commas are not allowed", pk.Value)
			}
			kvs = append(kvs, pk.Value+"="+pv.Value)
		}
		sort.Strings(kvs)
		return strings.Join(kvs, ","), nil
	}
	return "", errors.New("want a single value")
}

// applyConfigFile sets fs's flags from the configuration file at path.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	vals, order, err := loadConfigFile(path)
	if err != nil {
		return err
	}
	for _, k := range order {
		cv := vals[k]
		f := fs.Lookup(k)
		if f == nil || k == configFlag {
			return fmt.Errorf("%s:%d: unknown key %q (keys are the flags of '%s -h', without dashes)", path, cv.line, k, fs.Name())
		}
		if err := f.Value.Set(cv.value); err != nil {
			return fmt.Errorf("%s:%d: key %q: invalid value %q: %w", path, cv.line, k, cv.value, err)
		}
	}
	return nil
}
