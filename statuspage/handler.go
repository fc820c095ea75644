package statuspage

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
)

//go:embed assets
var assets embed.FS

// HistoryPath is the JSON endpoint of the history; ?since=<ms> returns only
// the samples taken after that time.
const HistoryPath = "/api/history"

// Handler serves the status page in front of next: a plain GET or HEAD of
// "/" (no WebSocket upgrade) gets the page, /ui/ its assets and HistoryPath
// the history as JSON; everything else, and every WebSocket upgrade on any
// path (legacy children connect to "/"), goes to next unchanged.
func Handler(h *History, next http.Handler) http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	static := http.StripPrefix("/ui/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isUpgrade(r) || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			next.ServeHTTP(w, r)
			return
		}
		switch {
		case r.URL.Path == "/":
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, sub, "index.html")
		case strings.HasPrefix(r.URL.Path, "/ui/"):
			w.Header().Set("Cache-Control", "no-cache")
			static.ServeHTTP(w, r)
		case r.URL.Path == HistoryPath:
			serveHistory(w, r, h)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

func serveHistory(w http.ResponseWriter, r *http.Request, h *History) {
	var since int64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			http.Error(w, "since: want ms since the Unix epoch", http.StatusBadRequest)
			return
		}
		since = n
	}
	v := h.Snapshot(since)
	status := json.RawMessage("null")
	if v.Status != nil {
		b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(v.Status)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		status = b
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(struct {
		View
		Status json.RawMessage `json:"status"`
	}{v, status})
}

func isUpgrade(r *http.Request) bool {
	for _, v := range r.Header.Values("Upgrade") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "websocket") {
				return true
			}
		}
	}
	return false
}
