package wsbridge

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/coder/websocket"
)

// TestStatusOriginalFields checks that GET /status serves the original
// parent's fields (connectedChildren, childStates with the child's own batch
// numbers, fallbackHasData), so monitoring written against it keeps working,
// beside the bridge's own (children, hasFallbackData...).
func TestStatusOriginalFields(t *testing.T) {
	fake := newFakeServer()
	env := newEnv(t, startFake(t, fake), nil)
	c := env.dial(t, nil)
	connect(t, c, "orig-src", "eu-1")
	send(t, c, websocket.MessageBinary, encode(t, testBatch("orig-src", "c7", 7, 1, 3)))
	if a, _ := recvAck(t, c); a.Sequence != 7 {
		t.Fatalf("ack for batch %d, want 7", a.Sequence)
	}

	resp, err := http.Get(env.srv.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"state", "buffer", "connectedChildren", "childStates", "fallbackHasData", "children", "hasFallbackData"} {
		if _, ok := m[k]; !ok {
			t.Errorf("status lacks %q: %s", k, body)
		}
	}
	var states []map[string]any
	if err := json.Unmarshal(m["childStates"], &states); err != nil || len(states) != 1 {
		t.Fatalf("childStates %s: %v", m["childStates"], err)
	}
	cs := states[0]
	for _, k := range []string{"id", "childShardName", "lastReceivedSequence", "lastAckedSequence", "connectedAt", "lastActivityAt", "batchesReceived", "entriesReceived"} {
		if _, ok := cs[k]; !ok {
			t.Errorf("childStates[0] lacks %q: %v", k, cs)
		}
	}
	if cs["id"] != "orig-src" || cs["childShardName"] != "eu-1" || cs["lastReceivedSequence"] != 7.0 || cs["lastAckedSequence"] != 7.0 ||
		cs["connectedAt"] == 0.0 || cs["lastActivityAt"] == 0.0 || cs["entriesReceived"] != 3.0 {
		t.Errorf("childStates[0] = %v", cs)
	}
}
