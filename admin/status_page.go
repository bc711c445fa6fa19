package admin

import (
	"html/template"
	"strings"
	"time"
)

// pageData is what the status page template shows: the index (Report
// nil) or one user's report, with the results of a test push.
type pageData struct {
	Report   *Report
	CSRF     string // the test-push form's token
	CanTest  bool   // a pusher is running
	Tested   bool   // Results are a test push's
	Results  []testResult
	Accounts []accountRow // the index
	Total    int          // registered users, for the index
}

type accountRow struct {
	User    string
	Devices int
}

type testResult struct {
	Token, AccountID, Outcome, Action, APNsID string
	OK                                        bool
}

var pageTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"when": func(t time.Time, now time.Time) string { return when(t, now) },
	"join": func(s []string) string { return strings.Join(s, ", ") },
	"result": func(p PushReport) string {
		return pushResultText(p.Status, p.Reason, p.Error)
	},
	"ok": func(status int) bool { return status == 200 },
}).Parse(pageHTML))

const pageHTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{with .Report}}{{.User}} - {{end}}xapsproxy status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;max-width:70em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.bad{color:#b00020;font-weight:600}.good{color:#1b6e20;font-weight:600}.note{color:#555}
code{background:#f4f4f4;padding:0 .2em}button{font-size:1em;padding:.3em .8em}
</style></head><body>
<h1>xapsproxy status</h1>
<form method="get" action="/status"><label>User <input name="user" value="{{with .Report}}{{.User}}{{end}}" autocomplete="off"></label> <button type="submit">Look up</button></form>
{{- if not .Report}}
<h2>Accounts</h2>
{{- if .Accounts}}
<table id="accounts"><tr><th>user</th><th>devices</th></tr>
{{- range .Accounts}}<tr><td><a href="/status?user={{.User}}">{{.User}}</a></td><td>{{.Devices}}</td></tr>{{end}}
</table>
{{- if gt .Total (len .Accounts)}}<p class="note">{{len .Accounts}} of {{.Total}} registered users shown.</p>{{end}}
{{- else}}<p>No device has registered yet.</p>{{end}}
{{- else}}{{with .Report}}{{$now := .Generated}}
<h2>Registrations of <span id="user">{{.User}}</span></h2>
{{- if not .Live}}<p class="bad">Live watcher state and recent pushes are not available.</p>{{end}}
{{- if .Registrations}}
<table id="registrations"><tr><th>device</th><th>account id</th><th>mailboxes</th><th>aps-version</th><th>topic</th><th>registered</th><th>renewed</th><th>last push</th></tr>
{{- range .Registrations}}
<tr><td><code class="token">{{.Token}}</code></td><td>{{.AccountID}}</td><td>{{join .Mailboxes}}</td><td>{{.Version}}</td>
<td>{{.Topic}}{{if .TopicMismatch}} <span class="bad">(not the certificate's topic)</span>{{end}}</td>
<td>{{when .Registered $now}}</td><td>{{when .Renewed $now}}{{if .Stale}} <span class="bad">stale</span>{{end}}</td>
<td>{{if .LastPush.IsZero}}none{{else}}{{when .LastPush $now}}: {{.LastPushResult}}{{end}}</td></tr>
{{- end}}
</table>
{{- else}}<p class="bad" id="unknown">No device registered for this user.</p>{{end}}
{{- if .Topic}}<p class="note">Certificate topic: <code>{{.Topic}}</code></p>{{end}}
{{- if .Live}}
<h2>Watcher</h2>
{{- with .Watch}}
<table id="watch">
{{- if .Connection}}<tr><th>state</th><td>{{.State}} (source {{.Source}}) since {{when .Since $now}}</td></tr>
{{- else}}<tr><th>state</th><td>dovecot events: no backend connection (source {{.Source}})</td></tr>{{end}}
{{- if .BackendUnreachable}}<tr><th>backend</th><td class="bad">unreachable</td></tr>{{end}}
<tr><th>mailboxes watched</th><td>{{join .Mailboxes}}</td></tr>
<tr><th>last error</th><td>{{if .LastError}}<span class="bad">{{when .LastErrorAt $now}}: {{.LastError}}</span>{{else}}none{{end}}</td></tr>
<tr><th>last event</th><td>{{with .LastEvent}}{{when .At $now}}, {{.Mailbox}}, {{.Kind}}{{else}}none since serve started{{end}}</td></tr>
</table>
{{- else}}<p>No watcher for this account (no registration, or not converged yet).</p>{{end}}
{{- end}}
{{- end}}
{{- if .Tested}}
<h2>Test push</h2>
{{- if .Results}}
<table id="test-results"><tr><th>device</th><th>account id</th><th>Apple's answer</th><th>apns-id</th></tr>
{{- range .Results}}<tr><td><code>{{.Token}}</code></td><td>{{.AccountID}}</td><td class="{{if .OK}}good{{else}}bad{{end}}">{{.Outcome}} ({{.Action}})</td><td>{{.APNsID}}</td></tr>{{end}}
</table>
{{- else}}<p>No device to push to.</p>{{end}}
{{- end}}
{{- with .Report}}{{$now := .Generated}}
{{- if and $.CanTest .Registrations}}
<form method="post" action="/status/test-push"><input type="hidden" name="user" value="{{.User}}"><input type="hidden" name="csrf" value="{{$.CSRF}}"><button type="submit" id="test-push">Send a test push</button> <span class="note">one push to each of this user's devices, now</span></form>
{{- end}}
{{- if .Live}}
<h2>Recent pushes</h2>
{{- if .RecentPushes}}
<table id="pushes"><tr><th>time</th><th>device</th><th>mailboxes</th><th>kind</th><th>Apple's answer</th><th>apns-id</th></tr>
{{- range .RecentPushes}}<tr><td>{{when .At $now}}</td><td><code>{{.Token}}</code></td><td>{{join .Mailboxes}}</td><td>{{.Kind}}</td><td class="{{if ok .Status}}good{{else}}bad{{end}}">{{result .}}</td><td>{{.APNsID}}</td></tr>{{end}}
</table>
{{- else}}<p>None since serve started.</p>{{end}}
{{- end}}
<h2>Outbox (pushes owed)</h2>
{{- if .Outbox}}
<table id="outbox"><tr><th>mailbox</th><th>kind</th><th>since</th></tr>
{{- range .Outbox}}<tr><td>{{.Mailbox}}</td><td>{{.Kind}}</td><td>{{when .At $now}}</td></tr>{{end}}
</table>
{{- else}}<p>Nothing owed.</p>{{end}}
<h2>What to check</h2>
<ul id="hints">{{range .Hints}}<li>{{.}}</li>{{end}}</ul>
<details><summary>What Apple's answers mean</summary><ul>
<li><b>200</b>: Apple took the push; the rest is on the phone (the list above).</li>
<li><b>410</b>, <b>400 BadDeviceToken</b>: the device token is gone; its registration was pruned, and the device registers again at its next IMAP session.</li>
<li><b>403</b>: Apple refused the certificate or token: check it with <code>xapsproxy cert</code>; every push is held until Apple takes it.</li>
<li><b>400 DeviceTokenNotForTopic</b>: the device registered for another topic than the certificate's (another server's certificate, or this one changed).</li>
<li><b>error: ...</b> (no answer, refused or reset connections, timeouts): Apple or the way to it is down; pushes are held and retried.</li>
</ul></details>
<p class="note"><a href="/status.json?user={{.User}}">JSON</a> · <a href="/status">all accounts</a></p>
{{- end}}
{{- end}}
</body></html>
`
