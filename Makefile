# Convenience targets; each is one plain command you can also run by hand.
.PHONY: build gen lint test test-short bench fuzz fuzz-json serve

build:
	go build -o lakehouse ./cmd/lakehouse

gen:
	go tool -modfile=tools/go.mod buf generate

lint:
	go tool -modfile=tools/go.mod buf lint
	go vet ./...

test:
	go test -race -count=1 -timeout 20m ./...

test-short:
	go test -short ./...

bench:
	go test -run='^$$' -bench=. -benchmem -cpu=1 ./codec

fuzz:
	go test -run='^$$' -fuzz=FuzzDecodeBatch -fuzztime=60s ./codec

fuzz-json:
	go test -run='^$$' -fuzz=FuzzValidJSON -fuzztime=60s ./codec

serve:
	go run ./cmd/lakehouse serve
