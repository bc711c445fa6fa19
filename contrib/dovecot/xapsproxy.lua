-- xapsproxy.lua: tells xapsproxy at once when mail arrives, flags change,
-- messages are expunged or mailboxes go away, so that iPhones get their push
-- without waiting for the proxy's own IMAP watch to notice.
--
-- Dovecot's push_notification Lua driver (shipped with Debian's dovecot-core)
-- runs this script in every IMAP, LMTP and LDA process that loads it. Per
-- mailbox transaction it calls dovecot_lua_notify_begin_txn(user), then one
-- dovecot_lua_notify_event_<name>(ctx, event) per event this script defines
-- a function for, then dovecot_lua_notify_end_txn(ctx, success). The script
-- collects what happened per mailbox and, when the transaction succeeded and
-- something relevant happened, sends ONE HTTP POST to xapsproxy:
--
--   POST <xapsproxy_url>
--   Authorization: Bearer <xapsproxy_secret>
--   Content-Type: application/json
--
--   {"user":"alice","events":[
--     {"mailbox":"INBOX","what":"arrived","uidvalidity":1700000000,"uidnext":43},
--     {"mailbox":"INBOX","what":"flags","uidvalidity":1700000000}]}
--
-- "what" is one of arrived, flags, expunged, gone (renamed away or deleted)
-- and unknown (a mailbox renamed to this name). uidnext is the highest new
-- UID + 1, sent with arrived only; uidvalidity is sent when Dovecot gave one.
--
-- The request has short timeouts and no retries: with xapsproxy down or
-- hung, the delivery or IMAP command goes on after at most about a second
-- and a warning is logged (never the secret). The proxy's own periodic check
-- finds what the lost request would have announced.
--
-- Settings, the only site-specific values:
--   xapsproxy_url     e.g. http://127.0.0.1:9144/dovecot/events
--   xapsproxy_secret  the same as events.secret in xapsproxy's configuration
-- Dovecot 2.3: in plugin { }, read with user:plugin_getenv().
-- Dovecot 2.4: in lua_settings { } of the push_notification lua { } filter,
-- passed to script_init(settings).
--
-- Install: see contrib/dovecot/95-xapsproxy.conf (2.3) and
-- 95-xapsproxy-2.4.conf (2.4), and "Dovecot's own events" in README.md.

local TIMEOUT_MSECS = 1000 -- connect, and the whole request

-- Settings from lua_settings (Dovecot 2.4); nil on 2.3, which reads them
-- from the user's plugin settings at each transaction.
local settings24 = nil

-- Dovecot 2.3 calls script_init() without arguments and needs 0 back;
-- 2.4 passes the lua_settings table and ignores the result.
function script_init(settings)
	if type(settings) == "table" then
		settings24 = settings
	end
	return 0
end

local function warn(msg)
	dovecot.event():log_warning("xapsproxy: " .. msg)
end

-- JSON string: escapes quotes, backslashes and control characters; bytes
-- from 0x80 up are passed on (Dovecot's mailbox names are UTF-8).
local json_escapes = {
	['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
	['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}
local function json_string(s)
	local escaped = string.gsub(s, '[%c"\\]', function(c)
		return json_escapes[c] or string.format("\\u%04x", string.byte(c))
	end)
	return '"' .. escaped .. '"'
end

-- Dovecot passes UIDs as Lua numbers (floats in Lua 5.3+); nil when absent.
local function uint(n)
	if type(n) ~= "number" or n < 1 or n > 4294967295 or n ~= math.floor(n) then
		return nil
	end
	return n
end

local function http_client()
	if settings24 ~= nil then
		return dovecot.http.client{
			user_agent = "xapsproxy.lua",
			connect_timeout = TIMEOUT_MSECS .. "ms",
			request_timeout = TIMEOUT_MSECS .. "ms",
			request_absolute_timeout = TIMEOUT_MSECS .. "ms",
			request_max_attempts = 1,
			max_connect_attempts = 1,
		}
	end
	return dovecot.http.client{
		user_agent = "xapsproxy.lua",
		connect_timeout_msecs = TIMEOUT_MSECS,
		request_timeout_msecs = TIMEOUT_MSECS,
		request_absolute_timeout_msecs = TIMEOUT_MSECS,
		max_attempts = 1,
		max_connect_attempts = 1,
		no_auto_retry = true,
	}
end

function dovecot_lua_notify_begin_txn(user)
	local url, secret
	if settings24 ~= nil then
		url, secret = settings24.xapsproxy_url, settings24.xapsproxy_secret
	else
		url, secret = user:plugin_getenv("xapsproxy_url"), user:plugin_getenv("xapsproxy_secret")
	end
	return { user = user.username, url = url, secret = secret, boxes = {}, order = {} }
end

-- box returns the record of one mailbox in this transaction.
local function box(ctx, name)
	local b = ctx.boxes[name]
	if b == nil then
		b = { name = name }
		ctx.boxes[name] = b
		ctx.order[#ctx.order + 1] = b
	end
	return b
end

local function message_event(ctx, event)
	local b = box(ctx, event.mailbox)
	b.uidvalidity = uint(event.uid_validity) or b.uidvalidity
	return b
end

local function arrived(ctx, event)
	local b = message_event(ctx, event)
	b.arrived = true
	local uid = uint(event.uid)
	if uid ~= nil and (b.maxuid == nil or uid > b.maxuid) then
		b.maxuid = uid
	end
end

-- LMTP and LDA deliveries.
function dovecot_lua_notify_event_message_new(ctx, event)
	arrived(ctx, event)
end

-- IMAP APPEND, COPY and MOVE into a mailbox.
function dovecot_lua_notify_event_message_append(ctx, event)
	arrived(ctx, event)
end

function dovecot_lua_notify_event_message_expunge(ctx, event)
	message_event(ctx, event).expunged = true
end

-- Dovecot also reports the implicit loss of \Recent as a FlagsClear with
-- nothing in it: only flags and keywords a client can see count.
local function visible(list)
	for _, f in ipairs(list or {}) do
		if f ~= "\\Recent" then
			return true
		end
	end
	return false
end

local function flags_changed(ctx, event)
	if visible(event.flags) or visible(event.keywords) then
		message_event(ctx, event).flags = true
	end
end

function dovecot_lua_notify_event_flags_set(ctx, event)
	flags_changed(ctx, event)
end

function dovecot_lua_notify_event_flags_clear(ctx, event)
	flags_changed(ctx, event)
end

function dovecot_lua_notify_event_mailbox_delete(ctx, event)
	box(ctx, event.mailbox).gone = true
end

function dovecot_lua_notify_event_mailbox_rename(ctx, event)
	box(ctx, event.mailbox_old).gone = true
	box(ctx, event.mailbox).unknown = true
end

local function body(ctx)
	local events = {}
	local function add(b, what, extra)
		local e = '{"mailbox":' .. json_string(b.name) .. ',"what":"' .. what .. '"'
		if b.uidvalidity ~= nil then
			e = e .. string.format(',"uidvalidity":%d', b.uidvalidity)
		end
		events[#events + 1] = e .. (extra or "") .. "}"
	end
	for _, b in ipairs(ctx.order) do
		if b.arrived then
			local extra = nil
			if b.maxuid ~= nil then
				extra = string.format(',"uidnext":%d', b.maxuid + 1)
			end
			add(b, "arrived", extra)
		end
		if b.flags then add(b, "flags") end
		if b.expunged then add(b, "expunged") end
		if b.gone then add(b, "gone") end
		if b.unknown then add(b, "unknown") end
	end
	if #events == 0 then
		return nil
	end
	return '{"user":' .. json_string(ctx.user) .. ',"events":[' .. table.concat(events, ",") .. "]}"
end

-- post sends one request; errors (a bad URL, say) are raised.
local function post(url, secret, payload)
	local req = http_client():request{ url = url, method = "POST" }
	req:add_header("Authorization", "Bearer " .. secret)
	req:add_header("Content-Type", "application/json")
	req:set_payload(payload)
	local resp = req:submit()
	local status = resp:status()
	if status == 401 then
		warn("POST " .. url .. " refused (401): xapsproxy_secret is not the proxy's events.secret")
	elseif status < 200 or status > 299 then
		warn(string.format("POST %s failed: %d %s", url, status, tostring(resp:reason())))
	end
end

function dovecot_lua_notify_end_txn(ctx, success)
	if success == false then
		return
	end
	local payload = body(ctx)
	if payload == nil then
		return
	end
	if ctx.url == nil or ctx.url == "" or ctx.secret == nil or ctx.secret == "" then
		warn("xapsproxy_url and xapsproxy_secret must both be set; not telling the proxy")
		return
	end
	-- A CR or LF in a header value makes Dovecot's HTTP client panic (and
	-- the delivery fail): a secret read with "<file" keeps the file's
	-- newline, so trim it, and refuse anything else out of place.
	local secret = string.match(ctx.secret, "^%s*(.-)%s*$")
	if secret == "" or string.find(secret, "[%c%s]") then
		warn("xapsproxy_secret has spaces or control characters inside; not telling the proxy")
		return
	end
	if string.find(ctx.url, "[%c%s]") then
		warn("xapsproxy_url has spaces or control characters; not telling the proxy")
		return
	end
	local ok, err = pcall(post, ctx.url, secret, payload)
	if not ok then
		warn("POST " .. ctx.url .. " failed: " .. tostring(err))
	end
end
