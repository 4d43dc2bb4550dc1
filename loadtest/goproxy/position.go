package main

import (
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

type position struct{ line, column int }

// locateKeys maps each key path in a TOML document, written the way
// validation errors name it ("listeners[0].address",
// "upstreams.api.backends[1]"), to where its value starts. go-toml reports
// positions for syntax and type errors but not for values that decode fine
// and fail validation, so this walks go-toml's own parser over the document
// once more. A document that fails to parse has already been rejected.
func locateKeys(doc []byte) map[string]position {
	keys := map[string]position{}
	arrayTables := map[string]int{} // "listeners" -> how many [[listeners]] so far
	var p unstable.Parser
	p.Reset(doc)
	table := ""
	at := func(n *unstable.Node) position {
		start := p.Shape(n.Raw).Start
		return position{start.Line, start.Column}
	}
	for p.NextExpression() {
		expr := p.Expression()
		switch expr.Kind {
		case unstable.Table:
			table = joinKey(expr.Key())
			keys[table] = at(firstKey(expr))
		case unstable.ArrayTable:
			name := joinKey(expr.Key())
			table = fmt.Sprintf("%s[%d]", name, arrayTables[name])
			arrayTables[name]++
			keys[table] = at(firstKey(expr))
			if _, seen := keys[name]; !seen {
				keys[name] = keys[table]
			}
		case unstable.KeyValue:
			key := joinKey(expr.Key())
			if table != "" {
				key = table + "." + key
			}
			value := expr.Value()
			keys[key] = at(value)
			if value.Kind == unstable.Array {
				keys[key] = at(firstKey(expr))
				elements := value.Children()
				for i := 0; elements.Next(); i++ {
					keys[fmt.Sprintf("%s[%d]", key, i)] = at(elements.Node())
				}
			}
		}
	}
	return keys
}

func joinKey(parts unstable.Iterator) string {
	var names []string
	for parts.Next() {
		names = append(names, string(parts.Node().Data))
	}
	return strings.Join(names, ".")
}

func firstKey(expr *unstable.Node) *unstable.Node {
	parts := expr.Key()
	parts.Next()
	return parts.Node()
}
