-- apptag.lua: shows apptag's application-record block (and Wireshark's process entries,
-- which Wireshark 4.0 does not decode yet) in Wireshark/tshark 4.0 and later.
--
-- Wireshark 4.0 turns a pcapng Custom Block with a PEN it does not know into a pseudo-frame
-- whose data is the block's custom data (after the PEN); this post-dissector decodes it.
--
-- Use:  tshark -X lua_script:contrib/wireshark/apptag.lua -r capture.pcapng -V
-- or copy the file to ~/.local/lib/wireshark/plugins/ for the GUI.
-- Filter examples:  apptag.app.name == "curl"   apptag.sock.local_port == 53
--
-- Layout: docs/FORMAT.md (version 1.x).

local APPTAG_PEN = 32473
local WIRESHARK_PEN = 32622

local p = Proto("apptag", "apptag application records")

local provenance = { [0] = "unknown", [1] = "kernel hook", [2] = "sock_diag scan", [3] = "procfs" }
local protos = { [1] = "ICMP", [6] = "TCP", [17] = "UDP", [58] = "ICMPv6", [132] = "SCTP", [136] = "UDPLite", [255] = "raw" }

local f = {
    version = ProtoField.string("apptag.version", "Format version"),
    final = ProtoField.bool("apptag.final", "Final table"),
    sequence = ProtoField.uint32("apptag.sequence", "Sequence"),
    part = ProtoField.uint16("apptag.part", "Part"),
    parts = ProtoField.uint16("apptag.parts", "Parts"),
    app_count = ProtoField.uint32("apptag.app_count", "Applications"),
    app = ProtoField.none("apptag.app", "Application"),
    app_name = ProtoField.string("apptag.app.name", "Name"),
    app_exe = ProtoField.string("apptag.app.exe", "Executable"),
    app_cgroup = ProtoField.string("apptag.app.cgroup", "cgroup"),
    app_cmdline = ProtoField.string("apptag.app.cmdline", "Command line"),
    app_uid = ProtoField.uint32("apptag.app.uid", "uid"),
    app_start = ProtoField.absolute_time("apptag.app.start", "Start time", base.UTC),
    app_pid = ProtoField.uint32("apptag.app.pid", "pid"),
    app_prov = ProtoField.string("apptag.app.provenance", "Attributed by"),
    sock = ProtoField.none("apptag.sock", "Socket"),
    sock_proto = ProtoField.uint8("apptag.sock.protocol", "Protocol", base.DEC, protos),
    sock_local4 = ProtoField.ipv4("apptag.sock.local_addr", "Local address"),
    sock_local6 = ProtoField.ipv6("apptag.sock.local_addr6", "Local address"),
    sock_lport = ProtoField.uint16("apptag.sock.local_port", "Local port"),
    sock_remote4 = ProtoField.ipv4("apptag.sock.remote_addr", "Remote address"),
    sock_remote6 = ProtoField.ipv6("apptag.sock.remote_addr6", "Remote address"),
    sock_rport = ProtoField.uint16("apptag.sock.remote_port", "Remote port"),
    sock_first = ProtoField.absolute_time("apptag.sock.first", "First packet", base.UTC),
    sock_last = ProtoField.absolute_time("apptag.sock.last", "Last packet", base.UTC),
    sock_pin = ProtoField.uint64("apptag.sock.packets_in", "Packets in"),
    sock_pout = ProtoField.uint64("apptag.sock.packets_out", "Packets out"),
    sock_bin = ProtoField.uint64("apptag.sock.bytes_in", "Bytes in"),
    sock_bout = ProtoField.uint64("apptag.sock.bytes_out", "Bytes out"),
    sock_cookie = ProtoField.uint64("apptag.sock.cookie", "Socket cookie", base.HEX),
    sock_pid = ProtoField.uint32("apptag.sock.pid", "pid"),
    sock_prov = ProtoField.string("apptag.sock.provenance", "Attributed by"),
    sock_attr = ProtoField.absolute_time("apptag.sock.attributed", "Attributed at", base.UTC),
    proc = ProtoField.none("apptag.process", "Process (Wireshark process entry)"),
    proc_pid = ProtoField.uint32("apptag.process.pid", "pid"),
    proc_name = ProtoField.string("apptag.process.name", "Name"),
    proc_path = ProtoField.string("apptag.process.path", "Path"),
    proc_cmdline = ProtoField.string("apptag.process.cmdline", "Command line"),
    proc_ppid = ProtoField.uint32("apptag.process.ppid", "Parent pid"),
    proc_uid = ProtoField.uint32("apptag.process.uid", "uid"),
    proc_user = ProtoField.string("apptag.process.user", "User"),
    proc_start = ProtoField.absolute_time("apptag.process.start", "Start time", base.UTC),
}
local list = {}
for _, v in pairs(f) do list[#list + 1] = v end
p.fields = list

local f_pen = Field.new("frame.cb_pen")

local function nstime(tvb, off)
    local ns = tvb(off, 8):le_uint64()
    local secs = (ns / 1000000000):tonumber()
    local frac = (ns % 1000000000):tonumber()
    return NSTime.new(secs, frac)
end

-- A u16-length-prefixed string at off; returns the range, the string and the next offset.
local function str16(tvb, off)
    local n = tvb(off, 2):le_uint()
    if n == 0 then return tvb(off, 2), "", off + 2 end
    return tvb(off, 2 + n), tvb(off + 2, n):string(ENC_UTF_8), off + 2 + n
end

local function prov(kind, value)
    local s = provenance[kind] or ("kind " .. kind)
    if kind == 1 then s = s .. " " .. value end
    return s
end

local function socket(tvb, off, tree)
    local len = tvb(off, 2):le_uint()
    local st = tree:add(f.sock, tvb(off, len))
    local protocol = tvb(off + 2, 1):uint()
    local fam = tvb(off + 3, 1):uint()
    local lport = tvb(off + 4, 2):le_uint()
    local rport = tvb(off + 6, 2):le_uint()
    st:add(f.sock_proto, tvb(off + 2, 1))
    local o = off + 8
    local lstr, rstr
    if fam % 2 == 1 then
        st:add(f.sock_local6, tvb(o, 16)); lstr = "[" .. tostring(tvb(o, 16):ipv6()) .. "]"; o = o + 16
    else
        st:add(f.sock_local4, tvb(o, 4)); lstr = tostring(tvb(o, 4):ipv4()); o = o + 4
    end
    st:add_le(f.sock_lport, tvb(off + 4, 2))
    if math.floor(fam / 2) % 2 == 1 then
        st:add(f.sock_remote6, tvb(o, 16)); rstr = "[" .. tostring(tvb(o, 16):ipv6()) .. "]"; o = o + 16
    else
        st:add(f.sock_remote4, tvb(o, 4)); rstr = tostring(tvb(o, 4):ipv4()); o = o + 4
    end
    st:add_le(f.sock_rport, tvb(off + 6, 2))
    st:add(f.sock_first, tvb(o, 8), nstime(tvb, o))
    st:add(f.sock_last, tvb(o + 8, 8), nstime(tvb, o + 8))
    st:add_le(f.sock_pin, tvb(o + 16, 8))
    st:add_le(f.sock_pout, tvb(o + 24, 8))
    st:add_le(f.sock_bin, tvb(o + 32, 8))
    st:add_le(f.sock_bout, tvb(o + 40, 8))
    st:add_le(f.sock_cookie, tvb(o + 48, 8))
    st:add(f.sock_attr, tvb(o + 56, 8), nstime(tvb, o + 56))
    st:add_le(f.sock_pid, tvb(o + 64, 4))
    st:add(f.sock_prov, tvb(o + 68, 8), prov(tvb(o + 68, 1):uint(), tvb(o + 72, 4):le_uint()))
    st:append_text(string.format(": %s %s:%d -> %s:%d", protos[protocol] or protocol, lstr, lport, rstr, rport))
    return off + len
end

local function app(tvb, off, tree)
    local len = tvb(off, 4):le_uint()
    local at = tree:add(f.app, tvb(off, len))
    at:add(f.app_start, tvb(off + 4, 8), nstime(tvb, off + 4))
    at:add_le(f.app_uid, tvb(off + 12, 4))
    local pid_count = tvb(off + 18, 2):le_uint()
    at:add(f.app_prov, tvb(off + 16, 8), prov(tvb(off + 16, 1):uint(), tvb(off + 20, 4):le_uint()))
    local socket_count = tvb(off + 24, 2):le_uint()
    local argc = tvb(off + 26, 2):le_uint()
    local o = off + 28
    local r, name, exe, cgroup
    r, name, o = str16(tvb, o); at:add(f.app_name, r, name)
    r, exe, o = str16(tvb, o); at:add(f.app_exe, r, exe)
    r, cgroup, o = str16(tvb, o); at:add(f.app_cgroup, r, cgroup)
    local args, start = {}, o
    for _ = 1, argc do
        local a
        r, a, o = str16(tvb, o)
        args[#args + 1] = a
    end
    if argc > 0 then at:add(f.app_cmdline, tvb(start, o - start), table.concat(args, " ")) end
    local pids = {}
    for _ = 1, pid_count do
        at:add_le(f.app_pid, tvb(o, 4))
        pids[#pids + 1] = tostring(tvb(o, 4):le_uint())
        o = o + 4
    end
    for _ = 1, socket_count do o = socket(tvb, o, at) end
    at:append_text(string.format(": %s (pid %s), %d socket(s)", name, table.concat(pids, ","), socket_count))
    return off + len, name
end

local function app_records(tvb, pinfo, tree)
    if tvb:len() < 32 or tvb(0, 4):string() ~= "ATAG" then return end
    local major = tvb(4, 2):le_uint()
    local minor = tvb(6, 2):le_uint()
    local t = tree:add(p, tvb(), "apptag application records")
    t:add(f.version, tvb(4, 4), major .. "." .. minor)
    if major ~= 1 then
        t:add_expert_info(PI_UNDECODED, PI_WARN, "apptag format version " .. major .. " is newer than this dissector")
        return
    end
    local header_len = tvb(8, 2):le_uint()
    local flags = tvb(10, 2):le_uint()
    t:add(f.final, tvb(10, 2), flags % 2 == 1)
    t:add_le(f.sequence, tvb(12, 4))
    t:add_le(f.part, tvb(16, 2))
    t:add_le(f.parts, tvb(18, 2))
    t:add_le(f.app_count, tvb(20, 4))
    local count = tvb(20, 4):le_uint()
    local o = header_len
    local names = {}
    for _ = 1, count do
        local name
        o, name = app(tvb, o, t)
        names[#names + 1] = name
    end
    pinfo.cols.protocol = "apptag"
    pinfo.cols.info = string.format("apptag %s table #%d part %d/%d: %s",
        (flags % 2 == 1) and "final" or "periodic", tvb(12, 4):le_uint(),
        tvb(16, 2):le_uint() + 1, tvb(18, 2):le_uint(), table.concat(names, ", "))
end

local function process_entry(tvb, pinfo, tree)
    if tvb:len() < 12 or tvb(0, 4):le_uint() ~= 3 then return end
    local len = tvb(4, 4):le_uint()
    local t = tree:add(f.proc, tvb(0, 8 + len))
    t:add_le(f.proc_pid, tvb(8, 4))
    local pid = tvb(8, 4):le_uint()
    local o, stop = 12, 8 + len
    local name = ""
    while o + 4 <= stop do
        local code = tvb(o, 2):le_uint()
        local n = tvb(o + 2, 2):le_uint()
        if code == 0 then break end
        local v = tvb(o + 4, n)
        if code == 2 then name = v:string(ENC_UTF_8); t:add(f.proc_name, v, name)
        elseif code == 3 then t:add(f.proc_path, v, v:string(ENC_UTF_8))
        elseif code == 4 then t:add(f.proc_cmdline, v, (v:bytes():raw():gsub("%z", " ")))
        elseif code == 5 then t:add_le(f.proc_ppid, v)
        elseif code == 6 then t:add_le(f.proc_uid, v)
        elseif code == 7 then t:add(f.proc_user, v, v:string(ENC_UTF_8))
        elseif code == 9 then t:add(f.proc_start, v, nstime(tvb, o + 4))
        end
        o = o + 4 + n + ((4 - n % 4) % 4)
    end
    t:append_text(string.format(": %s (pid %d)", name, pid))
    pinfo.cols.protocol = "process"
    pinfo.cols.info = string.format("Process %d: %s", pid, name)
end

function p.dissector(tvb, pinfo, tree)
    local pen = f_pen()
    if pen == nil then return end
    local ok, err = pcall(function()
        if pen.value == APPTAG_PEN then
            app_records(tvb, pinfo, tree)
        elseif pen.value == WIRESHARK_PEN then
            process_entry(tvb, pinfo, tree)
        end
    end)
    if not ok then
        tree:add(p, tvb(), "apptag: malformed block: " .. tostring(err))
    end
end

register_postdissector(p)
