//! The rule table: every rule bext can report, with a stable id, a category,
//! a severity (its anomaly score) and, for content rules, the pattern matched
//! against the canonical form of each inspected value (see `normalize`).
//!
//! Ids are stable: they appear in logs, in `waf.exclusions` and in the README
//! table. They follow the OWASP CRS family numbers (942 = SQL injection, ...)
//! but use the `9xx0NN` range, which CRS does not use, so they are never
//! mistaken for CRS rule ids. Patterns are `regex` syntax (linear time): no
//! look-around, no back-references.

/// Rule families; the names are what `waf.exclusions` and the logs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Method,
    Scanner,
    Protocol,
    ProtocolAttack,
    Multipart,
    Lfi,
    Rfi,
    Rce,
    Php,
    Generic,
    Xss,
    Sqli,
    Session,
    Java,
}

impl Category {
    pub const ALL: [Category; 14] = [
        Category::Method,
        Category::Scanner,
        Category::Protocol,
        Category::ProtocolAttack,
        Category::Multipart,
        Category::Lfi,
        Category::Rfi,
        Category::Rce,
        Category::Php,
        Category::Generic,
        Category::Xss,
        Category::Sqli,
        Category::Session,
        Category::Java,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Method => "method",
            Category::Scanner => "scanner",
            Category::Protocol => "protocol",
            Category::ProtocolAttack => "protocol_attack",
            Category::Multipart => "multipart",
            Category::Lfi => "lfi",
            Category::Rfi => "rfi",
            Category::Rce => "rce",
            Category::Php => "php",
            Category::Generic => "generic",
            Category::Xss => "xss",
            Category::Sqli => "sqli",
            Category::Session => "session",
            Category::Java => "java",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// CRS-style severities, used as anomaly scores. A request is blocked when
/// the sum of its matched rules reaches `waf.threshold` (default 5).
pub const CRITICAL: u8 = 5;
pub const WARNING: u8 = 3;
pub const NOTICE: u8 = 2;

/// Where a content rule applies (bit set).
pub type Scope = u8;
pub const S_PATH: Scope = 1;
pub const S_NAME: Scope = 2;
pub const S_VALUE: Scope = 4;
pub const S_HEADER: Scope = 8;
pub const S_FILENAME: Scope = 16;
pub const S_ANY: Scope = S_PATH | S_NAME | S_VALUE | S_HEADER | S_FILENAME;
/// Names, values and headers.
pub const S_DATA: Scope = S_NAME | S_VALUE | S_HEADER;
/// Everything except the request path.
pub const S_NOT_PATH: Scope = S_ANY & !S_PATH;

#[derive(Debug)]
pub struct Rule {
    pub id: u32,
    pub category: Category,
    pub severity: u8,
    pub what: &'static str,
    /// Regex on the canonical value; `None` for rules implemented in code.
    pub pattern: Option<&'static str>,
    pub scope: Scope,
}

const fn code(id: u32, category: Category, severity: u8, what: &'static str) -> Rule {
    Rule {
        id,
        category,
        severity,
        what,
        pattern: None,
        scope: 0,
    }
}

const fn rx(
    id: u32,
    category: Category,
    scope: Scope,
    what: &'static str,
    pattern: &'static str,
) -> Rule {
    Rule {
        id,
        category,
        severity: CRITICAL,
        what,
        pattern: Some(pattern),
        scope,
    }
}

use Category::*;

/// Shell commands commonly used after an injection point: the union of the
/// three lists below.
macro_rules! unix_cmds {
    () => {
        concat!(
            "(?:",
            unix_cmds_strong!(),
            "|",
            unix_cmds_word!(),
            "|",
            unix_cmds_loose!(),
            ")"
        )
    };
}

/// Commands too common in text after a `;`, `&`, `|` or line break to be
/// read as one there, whatever follows: `cat`, `tar`, `vi`, `vim` (file
/// names, prose, "Henry VI; ..."). CRS leaves these out of its PL1 command
/// rules for the same reason; what they would read (`/etc/passwd`) is
/// caught by the file rules. Inside `` `...` `` or `$(...)` they still count.
macro_rules! unix_cmds_loose {
    () => {
        r"(?:cat|tar|vi|vim)"
    };
}

/// Commands whose names are not ordinary words, or that CRS counts at PL1
/// whatever follows: after a shell separator they are a command.
macro_rules! unix_cmds_strong {
    () => {
        r"(?:tac|ls|whoami|uname|wget|curl|nc|ncat|netcat|socat|telnet|ssh|scp|tftp|ftp|bash|sh|zsh|ksh|csh|tcsh|busybox|python[23]?|perl|php|lua|nmap|printf|printenv|ifconfig|passwd|chmod|chown|rm|mv|cp|pkill|killall|grep|egrep|awk|gawk|sed|base64|base32|xxd|od|hexdump|strace|ltrace|sudo|crontab|nohup|setsid|mkfifo|mknod|unzip|gzip|gunzip|xz|unxz|bzip2|systemctl|useradd|usermod|hostname|pwd|chef-\w+|knife|ansible(?:-[a-z]+)?|cscli|c89|c99|gcc|docker|kubectl|mysql|psql|sqlite3|powershell|pwsh|cmd|certutil|bitsadmin|wmic|regedit|bcdboot|bcdedit|taskkill|tasklist|systeminfo|ipconfig|netstat|whois|nslookup|xargs|nano|openssl|gpg|echo|env|eval|exec|trap|dash|ping|alias|shutdown|reboot|halt|init|node|ruby|irb|jshell|jjs|gdb|tcpdump|rsync|lsof|pkexec|nsenter|chroot|iptables|timeout|sh\.exe|cmd\.exe)"
    };
}

/// Commands that are also English words ("time", "more", "find") or two or
/// three letters that often start a word ("id", "ps", "net"): prose such as
/// "hello; time he came" or "a hero; more than" has them right after a
/// separator, so they count only with command-like arguments (see
/// `cmd_args!`).
macro_rules! unix_cmds_word {
    () => {
        r"(?:nl|id|ip|cd|cc|dd|su|ps|net|reg|tee|zip|dig|time|more|less|find|head|tail|watch|make|host|kill|sleep|script|expect|export|service|history|strings|perf)"
    };
}

/// What may follow a word-like command for it to read as a command: nothing
/// (end of the value), a shell separator or redirection, or a first argument
/// that is an option, a path, a number, a quoted string, a variable, or a
/// file name with an extension. A plain word ("more than") is prose.
macro_rules! cmd_args {
    () => {
        r#"(?:\s*(?:$|[;&|<>`)\n]|\$\{?ifs)|\s+(?:[-/~.$'"`\\{]|\d|[\w-]+\.\w|[\w-]+\s*[;&|<>`\n]))"#
    };
}

pub static RULES: &[Rule] = &[
    // ---- method / scanner / protocol (implemented in code) -----------------
    code(911010, Method, CRITICAL, "HTTP method not in the allowed list"),
    code(913010, Scanner, CRITICAL, "User-Agent of a known security scanner"),
    code(920010, Protocol, CRITICAL, "GET/HEAD request with a body (Content-Length > 0 or Transfer-Encoding)"),
    code(920230, Protocol, CRITICAL, "request line not per RFC 9112: a method that is not a token, an HTTP version other than 1.0/1.1 on HTTP/1, HTTP/0.9"),
    code(920240, Protocol, CRITICAL, "request-target not in a form valid for the method (RFC 9112 3.2): a backslash in the path, absolute-form that is not http(s) with a host and a path, authority-form outside CONNECT, * outside OPTIONS"),
    code(920242, Protocol, WARNING, "raw # fragment in the request-target (dropped before forwarding; no browser sends one)"),
    code(920245, Protocol, WARNING, "invalid percent-encoding (a % not followed by two hex digits) in the request-target"),
    code(920250, Protocol, CRITICAL, "Host missing on HTTP/1.1, empty, repeated, not a valid uri-host[:port], or naming another authority than the request-target"),
    code(920260, Protocol, CRITICAL, "Transfer-Encoding other than one chunked coding (stacked or unknown codings, parameters, repeated fields)"),
    code(920265, Protocol, WARNING, "HTTP/1.x POST with neither Content-Length nor Transfer-Encoding"),
    code(920270, Protocol, CRITICAL, "Content-Type that is not a media type (type/subtype and token=value parameters, RFC 9110 8.3.1)"),
    code(920275, Protocol, CRITICAL, "Content-Range in a request that is not a valid range (RFC 9110 14.4)"),
    code(920280, Protocol, CRITICAL, "singleton header field sent more than once (Host, Content-Type, Authorization, Range, User-Agent, ...)"),
    code(920285, Protocol, CRITICAL, "empty value in a header whose grammar needs one (User-Agent, Content-Type, Content-Length, Transfer-Encoding, Range, If-Range, Content-Range, Origin, Authorization)"),
    code(920020, Protocol, CRITICAL, "both Content-Length and Transfer-Encoding, or a Content-Length that is not one run of digits"),
    code(920030, Protocol, CRITICAL, "CR, LF or NUL in a header value or argument name"),
    code(920040, Protocol, CRITICAL, "NUL byte in the path, an argument or a header"),
    code(920050, Protocol, WARNING, "broken multi-byte UTF-8 (truncated or overlong) in a body argument"),
    code(920060, Protocol, CRITICAL, "%u full-width or overlong UTF-8 encoding (filter evasion)"),
    code(920070, Protocol, CRITICAL, "request Content-Type not allowed (on a request with a body)"),
    code(920080, Protocol, CRITICAL, "charset in Content-Type not allowed (on a request with a body)"),
    code(920090, Protocol, CRITICAL, "restricted request header (Proxy, Lock-Token, Content-Encoding, If, Request-Range, X-HTTP-Method(-Override), X-Method-Override, X-Middleware-Subrequest)"),
    code(920100, Protocol, CRITICAL, "restricted file extension in the path (backups, databases, logs, configs), or an editor backup (`name.ext~`)"),
    code(920110, Protocol, CRITICAL, "conflicting, repeated or non-token Connection options (keep-alive and close), or several Connection fields"),
    code(920055, Protocol, CRITICAL, "broken multi-byte UTF-8 (truncated or overlong) after decoding the path or the query string"),
    code(920190, Protocol, CRITICAL, "Accept header naming a charset that is not allowed"),
    code(920210, Protocol, CRITICAL, "PUT or PATCH body without a Content-Type header"),
    code(920200, Protocol, CRITICAL, "\\uXXXX escape in a query or form argument (Unicode filter bypass; not on JSON requests)"),
    code(931040, Rfi, CRITICAL, "URL as the value of a path/dir/root/include/file/template parameter"),
    code(920120, Protocol, WARNING, "body could not be parsed for its declared Content-Type (malformed multipart, JSON or form)"),
    code(920130, Protocol, CRITICAL, "request body larger than waf.inspect_body_limit with body_over_limit = \"reject\" (answered 413)"),
    code(920140, Protocol, CRITICAL, "too many arguments (more than waf.max_args)"),
    code(920150, Protocol, WARNING, "invalid percent-encoding in an argument name"),
    code(920160, Protocol, WARNING, "Range or If-Range not per RFC 9110: an invalid or descending range, more than two overlapping or more than 64 ranges, If-Range without Range or with a weak tag"),
    code(920170, Protocol, WARNING, "double percent-encoding in the path or an argument"),
    code(920180, Protocol, CRITICAL, "multipart field name or file name with a quote, semicolon or backslash (parser confusion)"),
    code(921050, ProtocolAttack, CRITICAL, "Content-Type with a second media type in its parameters"),
    code(921060, ProtocolAttack, CRITICAL, "RFC 2109 `$Version` cookie (old cookie syntax that splits cookies differently in each parser)"),
    code(920220, Protocol, CRITICAL, "Accept-Encoding longer than 100 bytes or not a list of coding[;q=qvalue]; Accept, Accept-Language or Accept-Charset longer than 1 KiB"),
    code(922010, Multipart, CRITICAL, "multipart part with a charset that is not UTF-8 / ISO-8859-1 / Windows-1252"),
    code(922020, Multipart, CRITICAL, "multipart part with Content-Transfer-Encoding"),
    code(922030, Multipart, CRITICAL, "multipart part header name with illegal characters"),
    code(943010, Session, CRITICAL, "session id set through a parameter with a foreign or missing Referer (session fixation)"),
    code(933010, Php, CRITICAL, "uploaded file name with a PHP extension"),
    code(933080, Php, CRITICAL, "uploaded file named like a PHP session file (sess_...)"),
    code(944010, Java, CRITICAL, "uploaded file name with a JSP extension"),
    code(932010, Rce, CRITICAL, "uploaded file name of a restricted file (.htaccess, wp-config, web.config, .env, config.yml, ...)"),
    // ---- protocol attacks ----------------------------------------------------
    // CRS 921110: the methods CRS lists, WebDAV's included.
    rx(921010, ProtocolAttack, S_DATA, "HTTP request line inside a parameter (request smuggling / splitting)",
        r#"\b(?:get|post|head|put|delete|options|connect|trace|track|patch|propfind|proppatch|mkcol|copy|move|lock|unlock)\s+\S+\s+http/\d"#),
    // CRS 921120 / 921140 / 921160: after a CR or LF, a response status line
    // or a field a response or a proxy acts on. Field names that are also
    // words a text area may start a line with ("Via:", "Cookie:") are left
    // out: this rule also reads bodies.
    code(921070, ProtocolAttack, CRITICAL, "Expect other than 100-continue, or 100-continue on a request without content (expectation desync)"),
    code(921080, ProtocolAttack, CRITICAL, "Upgrade to anything but websocket on a GET (h2c smuggling, unknown protocols)"),
    code(921100, ProtocolAttack, CRITICAL, "CR/LF in a query argument followed by a header field (any name) or an HTTP version: response splitting / header injection through a reflected parameter"),
    code(921090, ProtocolAttack, CRITICAL, "Connection option naming an end-to-end field (Host, Content-Length, Authorization, Cookie, X-Forwarded-*, HTTP2-Settings, ...): hop-by-hop header abuse"),
    rx(921020, ProtocolAttack, S_DATA, "header injection / response splitting: CR/LF followed by a header name and value or a status line",
        r#"[\r\n]\s*(?:(?:location|refresh|set-cookie|content-[a-z-]+|host|transfer-encoding|x-[a-z-]+|access-control-[a-z-]+|www-authenticate|forwarded(?:-[a-z]+)?|remote-(?:addr|ip|host)|originating-ip)\s*:[ \t]*[^\s]|http/\d(?:\.\d)?\s+\d{3}\b)"#),
    rx(921030, ProtocolAttack, S_NAME | S_VALUE, "LDAP injection (a filter breakout: a `)` the value did not open)",
        r#"\)\s*\(\s*(?:[|&!]|[\w.-]+\s*[<>~]?=)|\)\s*\(\s*$|\*\s*\)\s*[|&!]\s*\("#),
    rx(921040, ProtocolAttack, S_DATA, "mod_proxy unix-socket SSRF (unix:...|http://)",
        r#"unix:[^|]*\|"#),
    // ---- local file inclusion / path traversal -------------------------------
    rx(930010, Lfi, S_ANY, "path traversal (a ../ or ..\\ segment after decoding; a trailing /.. in the path only above the root)",
        r#"(?:^|[\\/;])\.{2,3}[\\/;]|[\\/;]\.{2,3}(?:$|[\\/;])|0x(?:2e|2f|5c)(?:\.|0x2e|0x2f|0x5c)"#),
    rx(930020, Lfi, S_ANY, "access to an operating-system file",
        r#"(?:^|[^\w])(?:etc/(?:passwd|shadow|gshadow|subuid|subgid|group|hosts|issue|crontab|sudoers|fstab|hostname|resolv\.conf|ssh/|mysql|apache2?/|httpd/|nginx/|php)|proc/(?:self|\d+|interrupts|cpuinfo|meminfo|version|mounts|net|sys|kcore|config\.gz|cmdline|environ)\b|sys/(?:class|kernel|devices|block|module)|(?:boot|win|system)\.ini\b|windows[\\/]system32|\.ssh/(?:id_|authorized_keys|known_hosts)|id_(?:rsa|dsa|ecdsa|ed25519)\b|\.aws/credentials|\.docker/config|\.kube/config|httpd\.conf\b|\.(?:bash|zsh|mysql|psql|sh|python|node_repl)_history\b|/\.history\b|(?:^|/)\.htpasswd\b|(?:^|/)\.htaccess\b|var/log/|usr/local/apps?/|/?wp-config\.php|web\.config\b|\.git/(?:config|head|index))"#),
    rx(930030, Lfi, S_PATH, "dot-file or dot-directory in the path (other than /.well-known/)",
        r#"/\.(?:[a-z0-9_][a-z0-9_.-]*)(?:/|$)"#),
    rx(930040, Lfi, S_PATH, "backup, dump or log file in the path",
        r#"\.(?:sql|bak|backup|old|orig|save|swp|swo|tmp|dump)(?:\.(?:zip|gz|tgz|tar|bz2|xz|7z|rar))?$|/(?:debug|error|access|install|php_errors?)\.log$|/@id/|/__x00__|\.(?:sql|db|sqlite3?)\.(?:zip|gz|tgz|tar|bz2|xz|7z|rar)$"#),
    // ---- remote file inclusion ------------------------------------------------
    // Parsed, not matched: see `url.rs` for what counts as an include target.
    code(931010, Rfi, CRITICAL, "URL with a literal IP address (any spelling) naming a file to include, or ending in `?`"),
    rx(931020, Rfi, S_VALUE | S_NAME, "URL passed to a known PHP include parameter",
        r#"\binclude(?:_once)?\s*\(\s*['"]?(?:file|ftps?|https?)://"#),
    rx(931030, Rfi, S_VALUE, "URL ending in a question mark (include suffix trick)",
        r#"^(?:file|ftps?|https?)(?::/*[^?#\s]*)?\?+$"#),
    // ---- remote command execution ---------------------------------------------
    // The shell tokenizer (`shell.rs`, lists in `data/*.txt`).
    code(932100, Rce, CRITICAL, "Unix or Windows command in a shell command position, read as the shell would (quotes, backslashes, empty expansions, `$'..'`, `$IFS` and glob-spelled paths undone)"),
    rx(932020, Rce, S_DATA | S_PATH, "Unix command after a shell separator, also inside a `(` / `{` group (word-like commands need command-like arguments)",
        concat!(r"(?:`|\$\()\s*(?:\w+=\S*\s+)*(?:[\w.-]*/)*", unix_cmds!(), r"(?:$|[\s;&|<>`)]|\$\{?ifs)|(?:[;&|\n]|\|\||&&)\s*[({]?\s*(?:\w+=\S*\s+)*(?:(?:[\w.-]*/)*", unix_cmds_strong!(), r"(?:$|[\s;&|<>`)]|\$\{?ifs)|(?:[\w.-]*/)+", unix_cmds_word!(), r"(?:$|[\s;&|<>`)]|\$\{?ifs)|", unix_cmds_word!(), cmd_args!(), ")")),
    rx(932030, Rce, S_DATA, "Unix command at the start of a value with command-like arguments (an option, a path, a number, a variable, a quoted string) and shell syntax, or a command name alone on its line",
        concat!(r"^\s*(?:", unix_cmds_strong!(), "|", unix_cmds_word!(), r")\s*[;&|`]|^\s*", unix_cmds_strong!(), r#"(?:\s+(?:-{1,2}[a-z]|(?:[/~.$'"`\\]|\d|[\w-]+\.\w)[^\n]*[;&|<>`$]|[^\n]*\n$|[\w-]*[/.][\w./-]*\s*\n)|[ \t]*\r?\n\s*$)|^\s*(?:[\w.-]*/)*"#, unix_cmds_word!(), r"\s+(?:-{1,2}[a-z]|(?:[/~.$'`\\]|[\w-]+\.\w)[^\n]*(?:[;&|<>`$]|\n$))")),
    rx(932040, Rce, S_DATA | S_PATH, "shell expansion: $(...), ${...}, $[...], backticks, globs in paths, brace lists ({,x} or {cmd,arg})",
        concat!(r"\$\([^)]*\)|\$\[[^\]]*\]|\$\{[^}]*[#%:/^,~@!}][^}]*\}|\$\{\s*ifs\b|`\s*", unix_cmds!(), r"\b[^`]*`|/[\w.-]*\[!?[^\]]+\][\w.-]*(?:/|$)|/\[[^\]]*\](?:[\w.-]|/|$)|\{,[\w./-]+|\{\s*(?:[\w.-]*/)*", unix_cmds!(), r",(?:\}|[-/~$'\x22]|[\w.-]*/)|(?:^|\s)~[+-]\d*(?:\s|$)|(?:^|[\s;&|])!-?\d+!?|\$\{?@\}?[a-z]|\$\{?[a-z_]+\}?\s+-c\b|[<>]\([^)]*\)")),
    rx(932050, Rce, S_ANY, "shell or interpreter invocation; a command under bin/, sbin/ or usr/bin/",
        concat!(r#"(?:^|[^\w.])/?(?:s?bin|usr/(?:local/)?s?bin)/(?:ba|da|z|k|c|tc)?sh\b|/bin/[a-z]|\b(?:ba|z|k)?sh\s+-[ci]\b|\b(?:python[23]?|perl|ruby|php|node)\s+-[cerm]\s|/dev/(?:tcp|udp)/|\bnc(?:at)?\s+(?:-\w+\s+)*-[elvnpc]|\b(?:wget|curl)\s+(?:-[\w-]+\s+)*(?:https?|ftp)://|-m\s+http\.server|\bbusybox\s+\w"#, r"|(?:^|[^\w.-])(?:usr/(?:local/)?)?s?bin/", unix_cmds!(), r"(?:$|[\s;&|<>`)])")),
    rx(932060, Rce, S_DATA, "Windows command (for / if / cmd / powershell)",
        r#"(?:^|[;&|]\s*)for\s+(?:/[dflr]\s+(?:[^%]*\s)?)?%%?[\w\]\[]*\s+in\s*\(|(?:^|[;&|]\s*)if\s+(?:/i\s+)?(?:not\s+)?(?:exist\b|defined\b|errorlevel\b|cmdextversion\b|%[\w~]+%?\s|\[[^\]]*\]\s*==|""?[^"]*"?\s*==|\S+\s*==\s*\S+\s+\S|\S+\s+(?:equ|neq|lss|leq|gtr|geq)\s)|(?:^|[;&|]\s*)(?:cmd(?:\.exe)?\s+/[ck]\b|powershell(?:\.exe)?\s+-|regedit(?:\.exe)?\s+[^\s]|reg\s+(?:add|query|delete|export)\b|net\s+(?:user|localgroup|share)\b|certutil\s+-|bitsadmin\s+/|wmic\s|bcdboot[\s/]|bcdedit[\s/]|vssadmin\s|schtasks\s|rundll32\s)|%(?:systemroot|windir|comspec|path|temp|userprofile|programfiles)%|\bhkey_(?:local_machine|current_user|classes_root|users)\b"#),
    rx(932070, Rce, S_DATA, "Shellshock function definition",
        r#"\(\s*\)\s*\{[^}]*;\s*\}\s*;|^\s*\(\s*\)\s*\{"#),
    rx(932080, Rce, S_ANY, "PowerShell cmdlet, or a PowerShell alias (iwr, iwmi, gci, ...) after a separator",
        r#"\b(?:invoke-(?:expression|webrequest|restmethod|command|item|wmimethod)|iex\s*\(|new-object\s+(?:system\.)?net\.webclient|downloadstring\s*\(|start-process|set-executionpolicy|get-(?:childitem|content|process|wmiobject|credential)\s|-encodedcommand\b)|(?:^|[;&|]\s*)(?:iwr|irm|iex|invoke-webrequest|invoke-restmethod)\s+(?:-\w+\s+)*['"]?https?://|(?:^|[;&|]\s*)(?:iwmi|gwmi|swmi|rwmi|icm|ipmo|saps|sajb|gci|gcm|gps|spps|epcsv|ipcsv|sasv|spsv)(?:\s+-\w|\s*$|\s*[;&|])"#),
    rx(932090, Rce, S_DATA, "alias or function defined to run a command",
        concat!(r"\balias\s+(?:-p\s+)?\w+=\S*", unix_cmds!(), r"|\balias\s+-p\b|\balias\s+[\w-]+=\S")),
    // ---- PHP ------------------------------------------------------------------
    rx(933020, Php, S_ANY, "PHP open tag or template tag (`<? php`, `<?xml:` look-alikes included)",
        r#"<\?php\s*[^\s]|<\?=\s*[^\s?]|<\?\s+(?:php\s*[^\s]|(?:echo|print|printf|system|exec|passthru|shell_exec|eval|assert|include|require)\b|\$\w)|<\?xml\s*[^\s\w?-]|\[\\?/?php\]|\{/?php\}|<\?\s+[a-z_]\w*\s[^>]*(?:;|\?>)"#),
    rx(933030, Php, S_DATA, "PHP configuration directive assignment (php.ini names)",
        r#"\b(?:allow_url_(?:include|fopen)|auto_(?:prepend|append)_file|disable_(?:functions|classes)|open_basedir|safe_mode|extension_dir|extension|register_globals|magic_quotes_gpc|display_errors|log_errors|error_log|include_path|precision|memory_limit|max_execution_time|upload_tmp_dir|session\.save_path|short_open_tag|enable_dl|file_uploads|expose_php|sendmail_path|mail\.add_x_header|assert\.active|zend\.\w+|opcache\.\w+|phar\.readonly|user_ini\.filename|mbstring\.\w+|pcre\.\w+|session\.\w+|allow_\w+|unserialize_\w+|serialize_precision|post_max_size|upload_max_filesize|max_input_\w+|max_file_uploads|output_(?:buffering|handler)|variables_order|request_order|error_reporting|html_errors|track_errors|xmlrpc_errors|docref_\w+|implicit_flush|realpath_cache_\w+|default_(?:charset|mimetype|socket_timeout)|auto_detect_line_endings|arg_separator\.\w+|cgi\.\w+|fastcgi\.\w+|doc_root|user_dir|zend_extension|enable_post_data_reading|always_populate_raw_post_data|xdebug\.\w+|apc\.\w+|sys_temp_dir|hard_timeout)\s*=\s*\S"#),
    rx(933040, Php, S_ANY, "PHP superglobal or stream wrapper",
        r#"\$_(?:server|get|post|cookie|request|files|env|session)\b|\$globals\b|\$http_(?:get|post|raw_post_data|server|cookie|env|post_files)_vars\b|\$http_raw_post_data|\b(?:php|phar|zlib|glob|expect|ogg|rar|zip|compress\.(?:zlib|bzip2)|ssh2\.(?:shell|exec|tunnel|sftp|scp))://"#),
    rx(933050, Php, S_ANY, "PHP function call",
        r#"\b(?:exec|system|passthru|shell_exec|popen|proc_open|pcntl_exec|eval|assert|create_function|call_user_func(?:_array)?|preg_replace(?:_callback)?|include_once|require_once|file_get_contents|file_put_contents|fopen|fsockopen|pfsockopen|fwrite|fputs|readfile|unserialize|base64_decode|gzinflate|gzuncompress|gzdecode|str_rot13|strrev|phpinfo|posix_\w+|get_defined_(?:functions|vars|constants)|ini_(?:set|get|restore)|putenv|getenv|unpack|show_source|highlight_file|symlink|move_uploaded_file|curl_exec|curl_init|array_map|array_filter|usort|uasort|ob_start|parse_str|var_dump|var_export|print_r|settype|escapeshell(?:cmd|arg)|scandir|opendir|readdir|file_exists|fread|fgets|hex2bin|proc_nice|register_shutdown_function|register_tick_function|set_error_handler|dl|mb_ereg_replace|iterator_apply|invokeargs|reflectionfunction|bz(?:decompress|open|read)|gz(?:open|read|file|passthru)|assert_options|chr|intval|floatval|strval|boolval|filegroup|fileowner|fileperms|fileinode|is_(?:writable|writeable|readable|executable)|lchown|chgrp|readlink|tempnam|tmpfile|unlink|rmdir|stream_get_contents|stream_socket_client|parse_ini_(?:file|string)|get_cfg_var|getcwd|getmypid|getmyuid|php_uname|phpversion|sys_getloadavg|disk_(?:free|total)_space|simplexml_load_(?:file|string)|func_get_args|get_object_vars|array_walk|array_reduce|uksort|convert_uudecode|pcntl_fork)\s*(?:/\*.*?\*/\s*|#[^\n]*\n\s*|//[^\n]*\n\s*)*\([^)]*\)"#),
    rx(933090, Php, S_DATA, "high-risk PHP function name followed by a call, even glued to other text",
        r#"(?:fsockopen|gzdecode|gzinflate|gzuncompress|zlib_decode|shell_exec|base64_decode|str_rot13|call_user_func|create_function|file_get_contents|file_put_contents|pcntl_exec|proc_open|convert_uudecode|get_defined_(?:functions|vars|constants)|get_class_(?:methods|vars)|invokeargs|reflectionfunction|move_uploaded_file|highlight_file|show_source|phpinfo|passthru|apache_child_terminate|__halt_compiler|wp_(?:safe_)?remote_(?:fopen|get|head|post|request))[^\w\n]{0,8}\("#),
    rx(933060, Php, S_DATA, "PHP serialized object",
        r#"\b[oc]:\d+:"[\w\\]+":\d+:\{|\ba:\d+:\{(?:[sidbn]:\d*:?|\})"#),
    rx(933070, Php, S_DATA, "PHP variable function call, or a function called through parentheses or a string (`(system)(...)`, `\"system\"(...)`)",
        r#"\$+\s*(?:[a-z_][\w]*|\{[^}]+\})\s*(?:\[[^()]+\]\s*|\{[^}]+\}\s*|/\*.*?\*/\s*|//[^\n]*\n\s*|#[^\n]*\n\s*)*\([^)]*\)|\(\s*\$\w+\s*\)\s*\(|\(\s*["'][a-z_]\w*\s*["']\s*\)\s*\(|\(\s*(?:system|exec|passthru|shell_exec|popen|proc_open|pcntl_exec|eval|assert|create_function|call_user_func(?:_array)?|file_get_contents|file_put_contents|fopen|readfile|unserialize|base64_decode|phpinfo|include|require)\s*\)\s*\(|["'](?:system|exec|passthru|shell_exec|popen|proc_open|pcntl_exec|assert|create_function|call_user_func(?:_array)?|file_get_contents|file_put_contents|fopen|readfile|unserialize|base64_decode|phpinfo)["']\s*\(|\$\s*\{\s*['"$]"#),
    // ---- generic: Node.js, SSRF, prototype pollution, Ruby ------------------
    rx(934010, Generic, S_ANY, "Node.js / JavaScript code injection (process / require internals, child_process, *Sync spawners)",
        r#"\brequire\s*(?:\(\s*['"`]?\s*(?:child_process|fs|net|os|vm|process|http|dns)\b|\[)|\bchild_process\b|\bprocess\s*(?:\.|\[\s*['"`]?)\s*(?:env|mainmodule|binding|exit|kill|dlopen|stdout|stdin)\b|\bmainmodule\s*(?:\.|\[)\s*['"`]?\s*(?:require|constructor|_load)\b|\brequire\s*(?:\.\s*(?:main|cache|extensions)\b|\.\s*resolve\s*\(|\[\s*['"`](?:main|cache|extensions|resolve)\b)|\bconstructor\s*\.\s*_load\s*\(|\b(?:exec|execfile|spawn)sync\s*\(|\bconstructor\s*(?:\.|\[\s*['"`])\s*constructor\b|\bnew\s+function\s*\(|\bconsole\s*(?:\.|\[\s*['"`])\s*(?:log|info|warn|error|debug|dir|trace)\b['"`]?\]?\s*\(|_\$\$nd_func\$\$_|xyqktkrfrlvoqyqk|\bfunction\s*\(\s*\)\s*\{[^}]*\b(?:return|require|process|eval)\b|\beval\s*\([^)]*\)|\bmodule\s*\.\s*(?:exports|children|constructor)\b"#),
    // Parsed, not matched (`url.rs`): every spelling of an address
    // (`127.1`, `0x7f000001`, `[::ffff:a9fe:a9fe]`) resolves to where it points.
    code(934020, Generic, CRITICAL, "server-side request forgery: a URL to loopback, cloud metadata, a cluster-internal name or a private address (not the site's own), an obfuscated numeric address, or a raw-protocol scheme (gopher, dict, ...)"),
    rx(934030, Generic, S_ANY, "prototype pollution",
        r#"__proto__|\bconstructor\s*(?:\.|\[\s*['`]?)\s*prototype\b|constructor\]\s*\[\s*['`]?prototype"#),
    rx(934040, Generic, S_DATA, "Ruby / Node.js process spawning",
        r#"\b(?:process\.spawn|kernel\.(?:exec|spawn|system|open)|io\.popen|open3\.\w+|%x\{)\s*[({]?"#),
    rx(934050, Generic, S_DATA, "JavaScript infinite loop (DoS): while(true), while(any non-zero number), ...",
        r#"\bwhile\s*\(\s*(?:!\s*!\s*)*(?:true|[+-]?\d*[1-9][\d.]*|this|[+-]?infinity|\[\s*\]|\{\s*\}|"[^"]+"|'[^']+'|`[^`]+`|new\s+\w+|window|object|array|!\s*(?:false|null|undefined|nan|0|""|''|``))\s*\)"#),
    rx(934060, Generic, S_VALUE | S_NAME, "data: URI as a parameter name or value (non-image)",
        r#"^\s*data:(?:text|application)/[\w.+-]+"#),
    rx(934070, Generic, S_DATA, "server-side template injection probe",
        r#"\{\{\s*[\w.]*\s*[*+/-]\s*\d+\s*\}\}|\{\{[^}]*(?:__class__|__globals__|__builtins__|__subclasses__|\bconfig\b|\blipsum\b|\bcycler\b|\bjoiner\b|\brequest\.application)|\$\{\s*\d+\s*[*+]\s*\d+\s*\}|<%=?\s*\d+\s*[*+]\s*\d+\s*%>|#\{\s*\d+\s*[*+]\s*\d+\s*\}"#),
    // ---- XSS ------------------------------------------------------------------
    // libinjection's HTML5 tokenizer (`tokenize.rs`) in five contexts.
    code(941070, Xss, CRITICAL, "XSS: the value tokenizes as HTML with a dangerous tag, attribute or URL (libinjection)"),
    rx(941010, Xss, S_ANY, "script, style or applet tag, or another dangerous HTML tag with attributes",
        r#"<\s*/?\s*(?:\w+:)?(?:script|applet|vmlframe|style)\b|<\s*(?:v|xi|vml|t|html):\w+|<\s*(?:\w+:)?(?:iframe|frame|frameset|object|embed|meta|base|link|svg|math|form|isindex|marquee|bgsound|layer|ilayer|xss|import|handler|listener|portal|noscript|noembed|xmp|plaintext|keygen)[\s/+]|<!\[cdata\[|<!--.*?-->\s*<"#),
    rx(941020, Xss, S_ANY, "event handler attribute (on + 3 to 50 letters; also left open at the end of a tag)",
        r#"(?:^|[\s"'`;/=(,])on[a-z]{3,50}\s*=[^=]|<[^>]*[\s"'/]on[a-z]{3,50}\s*=\s*$"#),
    rx(941030, Xss, S_ANY, "javascript:/vbscript: URI",
        r#"j\s*a\s*v\s*a\s*s\s*c\s*r\s*i\s*p\s*t\s*:|v\s*b\s*s\s*c\s*r\s*i\s*p\s*t\s*:|livescript\s*:|\bdata\s*:\s*text/html|(?:src|href|action|formaction|background|dynsrc|lowsrc|xlink:href)\s*=\s*['`]?\s*(?:javascript|vbscript|data):"#),
    // Not the path: `/javascript-manual/document.cookie` names a page; the
    // markup that would run script in a path is the tag / handler / URI rules'.
    rx(941040, Xss, S_NOT_PATH, "JavaScript sink or gadget (also window[\"alert\"], [\"document\"][...] bracket access)",
        r#"\bdocument\s*(?:\.|\[\s*['"`])\s*(?:cookie|domain|write|writeln|location|body|documentelement)\b|\bwindow\s*(?:\.|\[\s*['"`])\s*(?:location|open|name)\b|\b(?:window|self|top|parent|frames|globalthis|this|document)\s*\[\s*['"`]\s*(?:alert|confirm|prompt|eval|document|cookie|location|open|fetch|settimeout|setinterval|atob|function|constructor|write)\b|\[\s*['"`]document['"`]\s*\]\s*\[|\b(?:alert|confirm|prompt)\s*(?:\(|`)|\b(?:settimeout|setinterval|execscript)\s*\(|\bstring\s*\.\s*fromcharcode\b|\b(?:atob|btoa)\s*\(|(?:\]|\))\s*\.\s*\w+\s*\.\s*(?:call|apply|bind)\s*(?:`|\()|\.\s*(?:sort|map|call|apply|filter|reduce)\s*`|\b(?:self|top|parent|frames|globalthis)\s*\[|\bimport\s*(?:\(|\{[^}]*\}\s*from\s*['"])|\bfetch\s*\(\s*['"`]?(?:https?:)?//|\.innerhtml\s*=|\blocation\s*(?:\.\s*href\s*)?=\s*['"`]?(?:javascript|//|https?:)"#),
    rx(941050, Xss, S_ANY, "CSS / attribute based script (expression(), -moz-binding, formaction, srcdoc, http-equiv, pattern), XML entity declaration (XXE)",
        r#"\bexpression\s*\(|-moz-binding|!entity\s+(?:%\s+)?\S+\s+(?:system|public)\b|<[a-z][\w:-]*\s(?:[^>]*[\s"'/])?pattern\s*=|url\s*\(\s*['`]?\s*javascript|@import\b|\b(?:formaction|srcdoc|http-equiv|xlink:href|implementation)\s*=|\bxmlns:\w+\s*=\s*['"]?[^'">]*(?:xinclude|/xhtml|xsl/transform)|<[a-z][\w:-]*\s[^>]*\bxmlns\s*=|\bstyle\s*=[^>]*(?:expression|javascript|behaviou?r\s*:)"#),
    rx(941060, Xss, S_ANY, "UTF-7 encoded markup or obfuscated tag",
        r#"\+ad[wz]-|\+acia-|<\s*[a-z](?:\s+[a-z]){3,}\b|<[a-z]+[\s/]+[^>]*\b(?:src|href|data)\s*=[^>]*>|<\s*\w+\s*/\s*\w+\s*="#),
    // ---- SQL injection -------------------------------------------------------
    // libinjection's tokenizer and fingerprint list (`tokenize.rs`): the
    // class decision; the patterns below cover what it is weak on.
    code(942110, Sqli, CRITICAL, "SQL injection: the value tokenizes as an injection (libinjection fingerprint)"),
    rx(942010, Sqli, S_ANY, "SQL tautology or boolean injection after a quote or number",
        r#"['"`]\s*\)?\s*(?:or|and|xor|\|\||&&|div|like|rlike|regexp)\s*\(?\s*['"`(\d@]|\b(?:or|and|xor)\s+\(?['"]?\s*\d+\s*['"]?\s*(?:=|<=?|>=?|<>|!=|\blike\b|\bis\b)\s*['"]?\d|\b(?:or|and)\s+(?:true|false|not|null|\d+\s*(?:--|#|;|$))|['"`]\s*(?:=|<>|!=|<=?|>=?)\s*['"`]"#),
    rx(942020, Sqli, S_ANY, "UNION SELECT",
        r#"\bunion\b(?:\s|/\*.*?\*/|\(|\ball\b|\bdistinct\b)*\bselect\b|unionselect|union\s*\(\s*select"#),
    rx(942030, Sqli, S_ANY, "SQL statement after a quote, semicolon or parenthesis",
        r#"(?:['";)]\s*select\s+[\w@*,()'"`\s]+\s+from\b|(?:['";)]|^[^\w'"]*)\s*(?:select\s+(?:\w+\s*\(|@@|null\b|\d|char\b|sleep\b|pg_sleep\b|user\b|version\b|database\b)|insert\s+into\b|update\s+\w+\s+set\b|delete\s+from\b|drop\s+(?:table|database|schema|user|view|function|procedure)\b|truncate\s+table\b|alter\s+(?:table|user|database)\b|create\s+(?:table|database|procedure|function|view|trigger|user)\s+\w|exec(?:ute)?\s+(?:xp_|sp_|master\.|\w+\s*\()|exec(?:ute)?\s*\(\s*@|declare\s+@|shutdown\b|waitfor\s+(?:delay|time)\b|replace\s*(?:/\*.*?\*/\s*)*(?:\w+\s*)*\(|grant\s+\w+\s+on\b))"#),
    rx(942040, Sqli, S_ANY, "SQL function typical of injection (CRS 942151 names that are not English words)",
        r#"(?:^|[^\w\x80-\xff])(?:sleep|benchmark|pg_sleep|extractvalue|updatexml|load_file|concat_ws|group_concat|make_set|find_in_set|substr|substring|unhex|hex|ascii|char|nchar|rand|uncompress|compress|sysdate|json_extract|json_keys|xmltype|utl_inaddr\.\w+|utl_http\.\w+|dbms_\w+(?:\.\w+)?|sqlite_compileoption_used|sqlite_version|randomblob|unistr|instr|char_length|bit_length|last_insert_id|row_count|current_user|session_user|system_user|ifnull|nullif|iif|isnull|pg_read_file|pg_ls_dir|lo_import|lo_export|xp_cmdshell|sp_executesql|openrowset|opendatasource|procedure\s+analyse|name_const|geometrycollection|polygon|multipoint|linestring|multilinestring|multipolygon|to_char|string_agg|array_agg|md5|sha1|sha2|conv|elt|aes_(?:de|en)crypt|des_(?:de|en)crypt|asciistr|bin_to_num|bit_(?:and|or|xor|count)|character_length|coercibility|connection_id|convert_tz|curdate|curtime|current_(?:date|time|timestamp)|date_(?:add|sub|format)|datediff|dayof(?:month|week|year)|export_set|from_(?:base64|days|unixtime)|get_lock|release_lock|is_(?:free|used)_lock|gtid_subset|hextoraw|rawtohex|inet6?_(?:aton|ntoa)|jsonb?_(?:agg|array\w*|build_\w+|each\w*|extract_path\w*|object\w*|populate_\w+|strip_nulls|to_record\w*|typeof|set\w*|insert|path_\w+|pretty)|last_day|lcase|ucase|lpad|rpad|makedate|master_pos_wait|monthname|octet_length|old_password|period_(?:add|diff)|pg_client_encoding|row_to_json|sec_to_time|soundex|sqlite_(?:compileoption_get|source_id)|str_to_date|substring_index|subdate|subtime|time_format|time_to_sec|timediff|timestamp(?:add|diff)|to_base64|to_jsonb|uncompressed_length|unix_timestamp|utc_(?:date|time|timestamp)|uuid_short|weight_string|yearweek|weekofyear|(?:stddev|var)_(?:pop|samp)|lo_(?:get|put|create|unlink|from_bytea))\s*(?:/\*.*?\*/\s*)*\(|(?:^|[^\w.\x80-\xff])(?:concat|strcmp)\s*(?:/\*.*?\*/\s*)*\(|\b(?:database|user|version|schema|ord|mid|bin|exp|floor|row|lower|upper|reverse|length|len|count|encode|decode|convert|cast|coalesce)\((?:\s*\)|\s*$|\s*[\d'"@]|\s*select\b)|\b(?:db_name|db_id|schema_name|object_id|object_name|host_name|suser_s?name|user_name|is_srvrolemember|has_dbaccess)\s*\((?:\s*\)|\s*$|\s*[\d'"@]|\s*select\b)"#),
    rx(942050, Sqli, S_ANY, "SQL system table, schema, database (msdb, northwind) or stored procedure",
        r#"\b(?:information_schema|pg_catalog|pg_shadow|pg_user|pg_database|pg_tables|tempdb|sysobjects|syscolumns|sysusers|sysdatabases|syslogins|msysaccessobjects|msysobjects|mysql\.(?:user|db|proc)|sqlite_(?:master|schema|temp_master)|all_tables|user_tables|dba_users|all_users|xp_cmdshell|xp_regread|xp_dirtree|sp_oacreate|sp_makewebtask|sp_password|sp_configure|sp_executesql|dbms_java|performance_schema|sys\.(?:objects|tables|columns|databases|sql_logins|database_name)|msdb|northwind|sysaux|pg_toast|master\.\.sys\w+|msys(?:accessstorage|accessxml|aces|modules2?|relationships|queries))\b"#),
    rx(942060, Sqli, S_ANY, "SQL comment or terminator after a quoted value",
        r#"^[^'"]{0,64}['"]\s*(?:;|--|#|/\*)|['"`]\s*\)\s*(?:;|--|#)|;\s*--|/\*!\d*|\*/\s*(?:select|union|from|where|and|or)\b|\b(?:select|union|from|where)\s*/\*"#),
    rx(942070, Sqli, S_ANY, "NoSQL (MongoDB) operator",
        r#"\[\s*\$(?:ne|eq|lt|lte|gt|gte|in|nin|regex|where|exists|nor|or|and|not|expr|elemmatch|all|size|type|mod|text|function|accumulator)\s*\]|^\$(?:ne|eq|lt|lte|gt|gte|in|nin|regex|where|exists|nor|or|and|not|expr|elemmatch|function|accumulator)$|\$where\s*[:=]"#),
    rx(942080, Sqli, S_ANY, "SQL conditional / comparison syntax",
        r#"\)\s*(?:like|rlike|regexp|and|or|xor|div)\s*\(|\bif\s*\(\s*[\w'"()]+\s*(?:=|<|>|!=)|\bcase\s+when\b.*\bthen\b|\bwhen\s+\d+\s*=\s*\d+\s+then\b|\bhaving\s+\d+\s*=\s*\d+|\border\s+by\s+\d+\s*(?:--|#|$)|\bgroup\s+by\s+.+\bhaving\b|\blimit\s+\d+\s*,\s*\d+\s*(?:--|#|$)|\binto\s+(?:out|dump)file\b|\bselect\b.*\bfrom\b.*\b(?:where|limit)\b.*(?:--|#|/\*)"#),
    rx(942090, Sqli, S_ANY, "PostgreSQL casts and JSON operators in an injection; integer-overflow probe values",
        r#"['")]\s*::\s*(?:bool|boolean|int\d?|integer|text|varchar|json|jsonb|regclass|name|numeric)\b|['"][\[{][^'"]*['"]\s*(?:::|@>|<@|#>>?|->>?|\?[|&]?|@@|@\?|[<>=])|\b\d+\.e[.(]\s*\w|\b\d+e\d*\s*(?:union|select|from)\b|\b2\.225073858507201\d*e-308\b|\w::(?:int[248]?|integer|bigint|smallint|varchar|bytea|bool|boolean|regclass|regproc|numeric|oid|inet)\b|['"`][\[{][^\n]*[\]}]['"`]\s*(?:::\s*jsonb?|@>|<@|#>>?|->>?|\?[|&])|^\s*(?:-?(?:2147483648|2147483649|4294967295|4294967296|0000012345|0000023456)|2147483647|1e309)\s*$"#),
    rx(942100, Sqli, S_ANY, "SQL keyword run typical of injection; statement verb after `;` with a `[` / `(` identifier; backquoted identifier followed by REGEXP / AS ... FROM",
        r#"\b(?:\d+\s+as\s+['"`]?\w+['"`]?\s+from\s+\w|select\s+\w+\s*\(|select\s+@@|into\s+@\w+|@@(?:version|datadir|hostname|basedir)|\bor\s+\d+\s*=\s*\d+|and\s+\d+\s*=\s*\d+|waitfor\s+delay\b|procedure\s+analyse\b|\bexec\s+master\.|\bsp_\w+\s+@)|;\s*(?:alter|create|truncate|rename|delete|drop|insert|select|update|load|desc)\s*\[\w|;\s*(?:alter|truncate|rename|drop|insert)\s*\(\s*\w{2,}|`\s*(?:rlike|regexp)\b|`\s*as\s*`\w+`\s*from\b"#),
    // ---- session fixation ----------------------------------------------------
    rx(943020, Session, S_NOT_PATH, "cookie set through a parameter (session fixation)",
        r#"\.cookie\b.*\bexpires\s*=|\bdocument\.cookie\b|http-equiv\s*=\s*['`]?\s*set-cookie|\bset-cookie\s*:"#),
    // ---- Java -----------------------------------------------------------------
    rx(944020, Java, S_ANY, "Java class or package used in deserialization / RCE gadgets",
        r#"\b(?:java\.(?:lang|io|net|nio|util|beans|rmi|security)\.\w+|java\.(?:runtime|processbuilder|system)\b|java\.(?:lang|io)\b|javax\.(?:script|naming|management|el)\b|com\.opensymphony\.xwork2|com\.sun\.(?:org\.apache|jndi|rowset)|org\.apache\.(?:commons|xalan|xerces|struts2?|tomcat|catalina|log4j|bcel|naming)|org\.omg\.corba|org\.springframework\.|org\.codehaus\.groovy|groovy\.lang|jdk\.jshell|sun\.misc|bsh\.interpreter|\bognl\b|clojure\.(?:core|main))"#),
    rx(944030, Java, S_ANY, "Java process execution / reflection gadget",
        r#"\b(?:processbuilder|runtime\s*\.\s*getruntime|getruntime\s*\(|\.exec\s*\(|classloader|getclass\s*\(|forname\s*\(|getmethod\s*\(|invoke\s*\(|newinstance\s*\(|getdeclared\w+\s*\(|scriptenginemanager|xmldecoder|objectinputstream|readobject\s*\(|class\.module\.classloader|\bt\s*\(\s*java\.)|\bjava\.processbuilder\b|(?:clonetransformer|forclosure|instantiatefactory|instantiatetransformer|invokertransformer|prototypeclonefactory|prototypeserializationfactory|whileclosure|chainedtransformer|constanttransformer)\b"#),
    rx(944040, Java, S_ANY, "Log4Shell / expression-language lookup (HTML-entity `$&lbrace;` forms included)",
        r#"\$\{\s*(?:jndi|ctx|env|sys|lower|upper|date|base64|java|main|spring|k8s|docker|log4j|bundle|marker|sd|web|event|script)\s*:|(?:\$|&dollar;?)(?:\{|&l(?:brace|cub);?)\s*(?:jndi|ctx)\b|\$\{[^}]*\$\{|\$\{\s*::-|\$\{\s*\w*\s*:-[^}]*\}|#\{[^}]*(?:runtime|processbuilder|\.exec|getclass|forname)|%\{[^}]*(?:#|@|\.)[^}]*\}"#),
    rx(944050, Java, S_ANY, "Java serialized object magic",
        r#"\bro0ab|\xac\xed\x00\x05|\baced0005"#),
];

pub fn by_id(id: u32) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_in_their_family() {
        let mut seen = HashSet::new();
        for r in RULES {
            assert!(seen.insert(r.id), "duplicate id {}", r.id);
            let family = r.id / 1000;
            let expect = match r.category {
                Method => 911,
                Scanner => 913,
                Protocol => 920,
                ProtocolAttack => 921,
                Multipart => 922,
                Lfi => 930,
                Rfi => 931,
                Rce => 932,
                Php => 933,
                Generic => 934,
                Xss => 941,
                Sqli => 942,
                Session => 943,
                Java => 944,
            };
            assert_eq!(
                family, expect,
                "rule {} is not in its category's family",
                r.id
            );
        }
    }

    #[test]
    fn category_names_round_trip() {
        for c in Category::ALL {
            assert_eq!(Category::parse(c.name()), Some(c));
        }
    }
}
