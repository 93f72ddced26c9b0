-- kexlab.lua: a Wireshark dissector for KXP/1, the kexlab wire protocol.
--
-- Every field is named as in docs/protocol.md (the spec): the frame header
-- (§1), the handshake messages (§3), alerts (§7) and the visible part of RECORD
-- frames (§6: seq, ciphertext, tag; the content is encrypted). Frames that span
-- TCP segments are reassembled with dissect_tcp_pdus. The dissector is registered
-- on TCP port 9700 (a preference) and as a heuristic on the "KX" 0x01 magic, so a
-- session on any other port is found too.
--
-- Install: copy this file into Wireshark's personal Lua plugins folder (see
-- docs/wireshark.md), or run `tshark -X lua_script:wireshark/kexlab.lua ...`.

local kxp = Proto("kxp", "kexlab Key Exchange Protocol (KXP/1)")

local HEADER_LEN = 8
local MAX_HANDSHAKE_PAYLOAD = 16384
local MAX_RECORD_PAYLOAD = 8 + 1 + 65536 + 16
local SEQ_LEN = 8
local TAG_LEN = 16
local RANDOM_LEN = 32
local DEFAULT_PORT = 9700

-- Value strings: the spec's names (§1, §2, §3, §7).
local frame_types = {
    [0x01] = "CLIENT_HELLO",
    [0x02] = "SERVER_HELLO",
    [0x03] = "KEY_TRANSPORT",
    [0x04] = "SERVER_SIGNATURE",
    [0x05] = "FINISHED",
    [0x15] = "ALERT",
    [0x17] = "RECORD",
}
local kex_names = { [1] = "rsa", [2] = "dhe", [3] = "psk" }
local suite_names = {
    [0x1301] = "aes128 (AES-128-GCM, SHA-256)",
    [0x1302] = "aes256 (AES-256-GCM, SHA-384)",
}
local suite_short = { [0x1301] = "aes128", [0x1302] = "aes256" }
local group_names = {
    [0x0000] = "none",
    [0x0017] = "secp256r1",
    [0x0018] = "secp384r1",
    [0x001D] = "x25519",
    [0x0100] = "ffdhe2048",
    [0x0101] = "ffdhe3072",
}
local scheme_names = { [0x0804] = "rsa_pss_rsae_sha256", [0x0807] = "ed25519" }
local alert_names = {
    [0] = "close_notify",
    [10] = "unexpected_message",
    [20] = "bad_record_mac",
    [22] = "record_overflow",
    [40] = "handshake_failure",
    [42] = "bad_certificate",
    [47] = "illegal_parameter",
    [50] = "decode_error",
    [51] = "decrypt_error",
    [70] = "protocol_version",
    [80] = "internal_error",
    [115] = "unknown_psk_identity",
}

local f = {
    magic = ProtoField.bytes("kxp.magic", "Magic"),
    version = ProtoField.uint8("kxp.version", "Version", base.DEC),
    type = ProtoField.uint8("kxp.type", "Frame type", base.HEX, frame_types),
    length = ProtoField.uint32("kxp.length", "Length", base.DEC),
    payload = ProtoField.bytes("kxp.payload", "Payload"),
    -- CLIENT_HELLO and SERVER_HELLO
    random = ProtoField.bytes("kxp.hello.random", "Random"),
    kex = ProtoField.uint8("kxp.kex", "Key exchange (kex)", base.DEC, kex_names),
    cipher_suite = ProtoField.uint16("kxp.cipher_suite", "Cipher suite", base.HEX, suite_names),
    group = ProtoField.uint16("kxp.group", "Group", base.HEX, group_names),
    key_share_len = ProtoField.uint16("kxp.key_share_len", "Key share length", base.DEC),
    key_share = ProtoField.bytes("kxp.key_share", "Key share"),
    psk_identity_len = ProtoField.uint8("kxp.psk_identity_len", "PSK identity length", base.DEC),
    psk_identity = ProtoField.string("kxp.psk_identity", "PSK identity", base.UNICODE),
    server_key_len = ProtoField.uint16("kxp.server_key_len", "Server key length", base.DEC),
    server_key = ProtoField.bytes("kxp.server_key", "Server key (DER SubjectPublicKeyInfo)"),
    -- KEY_TRANSPORT
    encrypted_secret_len = ProtoField.uint16("kxp.encrypted_secret_len", "Encrypted secret length", base.DEC),
    encrypted_secret = ProtoField.bytes("kxp.encrypted_secret", "Encrypted secret (RSA-OAEP premaster)"),
    -- SERVER_SIGNATURE
    sig_scheme = ProtoField.uint16("kxp.sig.scheme", "Signature scheme", base.HEX, scheme_names),
    sig_len = ProtoField.uint16("kxp.sig.signature_len", "Signature length", base.DEC),
    sig = ProtoField.bytes("kxp.sig.signature", "Signature"),
    -- FINISHED
    verify_data = ProtoField.bytes("kxp.verify_data", "Verify data"),
    -- ALERT
    alert_code = ProtoField.uint8("kxp.alert.code", "Alert", base.DEC, alert_names),
    alert_reason_len = ProtoField.uint8("kxp.alert.reason_len", "Reason length", base.DEC),
    alert_reason = ProtoField.string("kxp.alert.reason", "Reason", base.UNICODE),
    -- RECORD
    record_seq = ProtoField.uint64("kxp.record.seq", "Sequence number", base.DEC),
    record_ciphertext_len = ProtoField.uint32("kxp.record.ciphertext_len",
        "Ciphertext length (content type + content)", base.DEC),
    record_ciphertext = ProtoField.bytes("kxp.record.ciphertext", "Ciphertext"),
    record_tag = ProtoField.bytes("kxp.record.tag", "Authentication tag"),
}
kxp.fields = {
    f.magic, f.version, f.type, f.length, f.payload,
    f.random, f.kex, f.cipher_suite, f.group, f.key_share_len, f.key_share,
    f.psk_identity_len, f.psk_identity, f.server_key_len, f.server_key,
    f.encrypted_secret_len, f.encrypted_secret,
    f.sig_scheme, f.sig_len, f.sig, f.verify_data,
    f.alert_code, f.alert_reason_len, f.alert_reason,
    f.record_seq, f.record_ciphertext_len, f.record_ciphertext, f.record_tag,
}

local ef = {
    bad_magic = ProtoExpert.new("kxp.bad_magic", "Not a KXP frame: wrong magic (decode_error)",
        expert.group.MALFORMED, expert.severity.ERROR),
    bad_version = ProtoExpert.new("kxp.bad_version", "Unsupported version (protocol_version)",
        expert.group.PROTOCOL, expert.severity.ERROR),
    unknown_type = ProtoExpert.new("kxp.unknown_type", "Unknown frame type (unexpected_message)",
        expert.group.PROTOCOL, expert.severity.ERROR),
    overflow = ProtoExpert.new("kxp.overflow", "Length exceeds the frame type's limit (record_overflow)",
        expert.group.PROTOCOL, expert.severity.ERROR),
    short = ProtoExpert.new("kxp.short", "Field cut short (decode_error)",
        expert.group.MALFORMED, expert.severity.ERROR),
    trailing = ProtoExpert.new("kxp.trailing", "Trailing bytes after the message (decode_error)",
        expert.group.MALFORMED, expert.severity.ERROR),
    fatal_alert = ProtoExpert.new("kxp.fatal_alert", "Fatal alert",
        expert.group.RESPONSE_CODE, expert.severity.WARN),
}
kxp.experts = { ef.bad_magic, ef.bad_version, ef.unknown_type, ef.overflow, ef.short, ef.trailing, ef.fatal_alert }

kxp.prefs.port = Pref.uint("TCP port", DEFAULT_PORT,
    "TCP port decoded as KXP (sessions on other ports are found by the heuristic)")

local function max_payload(ftype)
    if ftype == 0x17 then return MAX_RECORD_PAYLOAD end
    return MAX_HANDSHAKE_PAYLOAD
end

local function name_of(tbl, v)
    return tbl[v] or string.format("unknown(0x%x)", v)
end

-- A cursor over one frame's payload [pos, stop): each read checks bounds and flags a
-- short field with an expert item instead of throwing, so one bad frame never hides
-- the rest of the packet.
local Cursor = {}
Cursor.__index = Cursor

local function cursor(tvb, tree, pos, stop)
    return setmetatable({ tvb = tvb, tree = tree, pos = pos, stop = stop, ok = true }, Cursor)
end

function Cursor:need(n, what)
    if not self.ok then return false end
    if self.pos + n > self.stop then
        self.tree:add_proto_expert_info(ef.short, what .. " is cut short")
        self.ok = false
        return false
    end
    return true
end

function Cursor:uint(field, n, what)
    if not self:need(n, what) then return nil end
    local range = self.tvb(self.pos, n)
    self.tree:add(field, range)
    self.pos = self.pos + n
    return range:uint()
end

function Cursor:fixed(field, n, what)
    if not self:need(n, what) then return nil end
    if n > 0 then self.tree:add(field, self.tvb(self.pos, n)) end
    self.pos = self.pos + n
    return true
end

-- opaque x<0..255> or <0..65535>: the length field, then the bytes (as text if `text`).
function Cursor:vector(len_field, len_size, data_field, what, text)
    local n = self:uint(len_field, len_size, what .. " length")
    if n == nil or not self:need(n, what) then return nil end
    local value = ""
    if n > 0 then
        local range = self.tvb(self.pos, n)
        if text then
            value = range:string(ENC_UTF_8)
            self.tree:add(data_field, range, value)
        else
            self.tree:add(data_field, range)
        end
    end
    self.pos = self.pos + n
    return n, value
end

function Cursor:finish()
    if self.ok and self.pos < self.stop then
        self.tree:add_proto_expert_info(ef.trailing,
            string.format("%d trailing byte(s)", self.stop - self.pos))
    end
end

-- Each message returns a short summary for the Info column.
local function dissect_hello(c, is_server)
    c:fixed(f.random, RANDOM_LEN, "random")
    local kex = c:uint(f.kex, 1, "kex")
    local suite = c:uint(f.cipher_suite, 2, "cipher_suite")
    local group = c:uint(f.group, 2, "group")
    c:vector(f.key_share_len, 2, f.key_share, "key_share")
    local identity = nil
    if is_server then
        c:vector(f.server_key_len, 2, f.server_key, "server_key")
    else
        local n, value = c:vector(f.psk_identity_len, 1, f.psk_identity, "psk_identity", true)
        if n and n > 0 then identity = value end
    end
    c:finish()
    if kex == nil or suite == nil or group == nil then return "" end
    local parts = { name_of(kex_names, kex), suite_short[suite] or string.format("0x%04x", suite) }
    if group ~= 0 then parts[#parts + 1] = name_of(group_names, group) end
    if identity then parts[#parts + 1] = "identity=" .. identity end
    return " (" .. table.concat(parts, ", ") .. ")"
end

local function dissect_key_transport(c)
    c:vector(f.encrypted_secret_len, 2, f.encrypted_secret, "encrypted_secret")
    c:finish()
    return ""
end

local function dissect_server_signature(c)
    local scheme = c:uint(f.sig_scheme, 2, "scheme")
    c:vector(f.sig_len, 2, f.sig, "signature")
    c:finish()
    if scheme == nil then return "" end
    return " (" .. name_of(scheme_names, scheme) .. ")"
end

local function dissect_finished(c)
    -- verify_data[HashLen]: the whole payload (32 or 48 bytes by the suite).
    c:fixed(f.verify_data, c.stop - c.pos, "verify_data")
    return ""
end

local function dissect_alert(c)
    local code = c:uint(f.alert_code, 1, "code")
    local _, reason = c:vector(f.alert_reason_len, 1, f.alert_reason, "reason", true)
    c:finish()
    if code == nil then return "" end
    if code ~= 0 then c.tree:add_proto_expert_info(ef.fatal_alert, "Fatal alert: " .. name_of(alert_names, code)) end
    local out = " " .. name_of(alert_names, code)
    if reason and reason ~= "" then out = out .. ": " .. reason end
    return out
end

local function dissect_record(c)
    local n = c.stop - c.pos
    if n < SEQ_LEN + 1 + TAG_LEN then
        c.tree:add_proto_expert_info(ef.short, "RECORD payload under 25 bytes")
    end
    if not c:need(SEQ_LEN, "seq") then return "" end
    local seq_range = c.tvb(c.pos, SEQ_LEN)
    c.tree:add(f.record_seq, seq_range)
    c.pos = c.pos + SEQ_LEN
    local rest = c.stop - c.pos
    local ct_len = rest - TAG_LEN
    if ct_len < 0 then ct_len = 0 end
    c.tree:add(f.record_ciphertext_len, ct_len):set_generated()
    if ct_len > 0 then c.tree:add(f.record_ciphertext, c.tvb(c.pos, ct_len)) end
    if rest >= TAG_LEN then c.tree:add(f.record_tag, c.tvb(c.pos + ct_len, TAG_LEN)) end
    return " seq=" .. tostring(seq_range:uint64())
end

local dissectors = {
    [0x01] = function(c) return dissect_hello(c, false) end,
    [0x02] = function(c) return dissect_hello(c, true) end,
    [0x03] = dissect_key_transport,
    [0x04] = dissect_server_signature,
    [0x05] = dissect_finished,
    [0x15] = dissect_alert,
    [0x17] = dissect_record,
}

-- The first frame completed in a segment replaces TCP's Info text, the next ones are
-- appended; a segment that completes no frame keeps TCP's "[TCP segment of ...]".
local first_in_segment = true

local function info_append(pinfo, text)
    if first_in_segment then
        pinfo.cols.info:set(text)
        first_in_segment = false
    else
        pinfo.cols.info:append(", " .. text)
    end
end

-- One whole PDU (dissect_tcp_pdus hands us exactly one frame, reassembled).
local function dissect_frame(tvb, pinfo, tree)
    local total = tvb:len()
    pinfo.cols.protocol = "KXP"
    local ftype = tvb(3, 1):uint()
    local length = tvb(4, 4):uint()
    local tname = frame_types[ftype] or string.format("unknown(0x%02x)", ftype)
    local sub = tree:add(kxp, tvb(0, total), "KXP/1 " .. tname)
    local magic = sub:add(f.magic, tvb(0, 2))
    if tvb(0, 2):bytes():tohex() ~= "4B58" then
        magic:add_proto_expert_info(ef.bad_magic)
        info_append(pinfo, "Not KXP (bad magic)")
        return total
    end
    local ver = sub:add(f.version, tvb(2, 1))
    if tvb(2, 1):uint() ~= 1 then ver:add_proto_expert_info(ef.bad_version) end
    local titem = sub:add(f.type, tvb(3, 1))
    local litem = sub:add(f.length, tvb(4, 4))
    local body = dissectors[ftype]
    if body == nil then
        titem:add_proto_expert_info(ef.unknown_type)
        info_append(pinfo, tname)
        return total
    end
    if length > max_payload(ftype) then
        litem:add_proto_expert_info(ef.overflow)
        info_append(pinfo, tname .. " (length over limit)")
        return total
    end
    local stop = HEADER_LEN + length
    if stop > total then stop = total end
    local c = cursor(tvb, sub, HEADER_LEN, stop)
    local summary = body(c) or ""
    sub:append_text(summary)
    info_append(pinfo, tname .. summary)
    return total
end

-- Called with at least HEADER_LEN bytes at `offset`. A header that cannot be a frame
-- takes the rest of the segment, so garbage never makes TCP wait for gigabytes.
local function frame_len(tvb, pinfo, offset)
    local remaining = tvb:len() - offset
    if tvb(offset, 2):bytes():tohex() ~= "4B58" then return remaining end
    local ftype = tvb(offset + 3, 1):uint()
    local length = tvb(offset + 4, 4):uint()
    if frame_types[ftype] == nil or length > max_payload(ftype) then return remaining end
    return HEADER_LEN + length
end

function kxp.dissector(tvb, pinfo, tree)
    first_in_segment = true
    dissect_tcp_pdus(tvb, tree, HEADER_LEN, frame_len, dissect_frame, true)
    return tvb:len()
end

-- Heuristic: "KX" 0x01 and a known frame type at the start of a segment.
local function heuristic(tvb, pinfo, tree)
    if tvb:len() < 4 then return false end
    if tvb(0, 3):bytes():tohex() ~= "4B5801" then return false end
    if frame_types[tvb(3, 1):uint()] == nil then return false end
    -- Remember the conversation, so segments that start mid-frame come to us too.
    pinfo.conversation = kxp
    kxp.dissector(tvb, pinfo, tree)
    return true
end

local tcp_port_table = DissectorTable.get("tcp.port")
local registered_port = DEFAULT_PORT
tcp_port_table:add(registered_port, kxp)
kxp:register_heuristic("tcp", heuristic)

function kxp.prefs_changed()
    if kxp.prefs.port ~= registered_port then
        tcp_port_table:remove(registered_port, kxp)
        registered_port = kxp.prefs.port
        if registered_port ~= 0 then tcp_port_table:add(registered_port, kxp) end
    end
end
