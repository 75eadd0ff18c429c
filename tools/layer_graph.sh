#!/bin/sh
# tools/layer_graph.sh — the module graph of src/ drawn as layers, with every dependency that
# runs up a layer and every module cycle. Exits 1 when it finds either (ctest runs it: label
# tools), 2 on a usage error. Shell + POSIX awk only, so any CI image runs it.
#
#   tools/layer_graph.sh            # the repository this script lives in
#   tools/layer_graph.sh DIR        # another checkout
#
# A module is a .c/.h pair by path (src/io/png.c + src/io/png.h = io/png); a header alone, such
# as sdw/image.h, is a module too, and a public header include/sdw/X.h is module sdw/X. Two kinds
# of file belong to another module than their path says:
#   - a private header X_impl.h beside module X (vtables, private structs: STYLE.md) is part of X;
#   - a .c file without a header of its own whose functions are declared in the header of a module
#     that has its own .c is part of that module: one module split over files for size (the
#     generation core's models/diffusion_image.c is part of models/diffusion).
# Layers, lowest first (DESIGN.md; a module may depend on its own layer and lower ones only):
#
#   0 public (include/sdw)  1 core  2 io  3 nn  4 text, sampling  5 models  6 engine
#   7 server, cli, pool (the Redis worker pool: its workers and its gateway's job service)
#
# Module A depends on module B when
#   - a file of A includes a header of B ("include"), or
#   - a .c file of A calls a function that a .c file of B defines and that no public header
#     declares ("calls"). This shows a cycle hidden behind a shared private header:
#     server/native.c and server/sse.c include only server_impl.h, yet each calls the other.
#     A public header's functions are contracts: calling one depends on the public header, not on
#     the file implementing it. Naming a function or a table without calling it (an ops table,
#     a route table, the registry's list of families) registers a plug-in: the plug-in depends on
#     the interface it implements, not on whoever lists it. For the same reason a header that
#     declares nothing but such descriptors (extern const objects: a family's sd_model.h, which
#     registry.c includes to list it) is a registration header: including it is not a dependency.
# Names are read after comments and string literals are removed; a definition is a non-static
# function or object whose declaration starts in column 0 of a .c file (the house style).
set -eu

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
if [ ! -d "$root/src" ]; then
    echo "layer_graph: $root has no src/ folder" >&2
    exit 2
fi
cd "$root"

# Sorted, so that the report is stable.
files=$(find src include/sdw -type f \( -name '*.c' -o -name '*.cc' -o -name '*.h' \
        -o -name '*.inc' \) | LC_ALL=C sort)

# shellcheck disable=SC2086 # one argument per file: paths in src/ have no spaces
exec awk '
function layer_of(mod,    top) {
    top = mod
    sub(/\/.*/, "", top)
    return (top in LAYER) ? LAYER[top] : -1
}
# The module a path names by itself: src/ or include/ and the extension dropped.
function path_module(path,    m) {
    m = path
    if (m ~ /^include\//) sub(/^include\//, "", m)
    else sub(/^src\//, "", m)
    sub(/\.(c|cc|h|inc)$/, "", m)
    return m
}
# The module a file belongs to (see the rules at the top).
function module_of(path,    m, x) {
    if (path in JOIN) return JOIN[path]
    m = path_module(path)
    if (m ~ /_impl$/) {
        x = m
        sub(/_impl$/, "", x)
        if (x in PATH_MODULE) return x
    }
    return m
}
# One line with comments and the contents of string and character literals removed. Block
# comments carry over between lines (in_comment).
function strip(s,    out, i, n, c, d, q) {
    out = ""
    n = length(s)
    for (i = 1; i <= n; i++) {
        c = substr(s, i, 1)
        if (in_comment) {
            if (c == "*" && substr(s, i + 1, 1) == "/") { in_comment = 0; i++ }
            continue
        }
        d = substr(s, i + 1, 1)
        if (c == "/" && d == "*") { in_comment = 1; i++; out = out " "; continue }
        if (c == "/" && d == "/") break
        if (c == "\"" || c == "\047") {
            q = c
            for (i++; i <= n; i++) {
                c = substr(s, i, 1)
                if (c == "\\") { i++; continue }
                if (c == q) break
            }
            out = out q q
            continue
        }
        out = out c
    }
    return out
}
# The sdw_ names that line calls (file f, line number ln): a name followed by "(". With decl set,
# records them as declarations of file f instead.
function calls(f, line, ln, decl,    rest, name, pre) {
    rest = line
    pre = ""
    while (match(rest, /sdw_[A-Za-z0-9_]*[ \t]*\(/)) {
        name = substr(rest, RSTART, RLENGTH)
        sub(/[ \t]*\($/, "", name)
        pre = RSTART > 1 ? substr(rest, RSTART - 1, 1) : pre
        if (RSTART == 1 || pre !~ /[A-Za-z0-9_]/) {
            if (decl) { if (!(name in DECL)) DECL[name] = f }
            else if (!((f, name) in CALL)) CALL[f, name] = ln
        }
        pre = "("
        rest = substr(rest, RSTART + RLENGTH)
    }
}
# A definition starting on this line of a .c file: a non-static declaration in column 0 whose
# last sdw_ name before the first "(", "[" or "=" is what it declares. Functions are confirmed
# when their "{" comes before a ";" (a prototype ends with ";").
function definitions(f, line, ln,    head, name, k) {
    if (pending != "") {
        k = match(line, /[{;]/)
        if (k) {
            if (substr(line, k, 1) == "{") define(pending, f, pending_ln)
            pending = ""
        }
        return
    }
    if (line !~ /^[A-Za-z_]/) return
    if (line ~ /^(static|typedef|extern|struct|union|enum|return|if|else|for|while|do|switch|case|default|goto)[^A-Za-z0-9_]/)
        if (line !~ /^(struct|union|enum)[ \t]+[A-Za-z0-9_]+[ \t]*\*?[ \t]*sdw_/) return
    if (!match(line, /[(\[=]/)) return
    head = substr(line, 1, RSTART - 1)
    k = substr(line, RSTART, 1)
    name = ""
    while (match(head, /sdw_[A-Za-z0-9_]*/)) {
        name = substr(head, RSTART, RLENGTH)
        head = substr(head, RSTART + RLENGTH)
    }
    if (name == "" || head !~ /^[ \t]*$/) return
    if (k != "(") { define(name, f, ln); return }
    line = substr(line, index(line, name "(") + length(name))
    k = match(line, /[{;]/)
    if (k) { if (substr(line, k, 1) == "{") define(name, f, ln) }
    else { pending = name; pending_ln = ln }
}
function define(name, f, ln) {
    if (name in DEF) return
    DEF[name] = f
    DEF_LN[name] = ln
    DEFS[f] = DEFS[f] " " name
}
# A dependency of module a on module b (kind "include" or "calls"), with where it comes from.
function depend(a, b, kind, where) {
    if (a == b) return
    if (!((a, b) in EDGE)) { EDGE[a, b] = kind; WHERE[a, b] = where; OUT[a] = OUT[a] " " b }
    else if (EDGE[a, b] != kind) EDGE[a, b] = "include"
}
# Tarjan: strongly connected components of the module graph.
function connect(v,    n, i, w, targets) {
    INDEX[v] = LOW[v] = ++counter
    STACK[++sp] = v
    ON[v] = 1
    n = split(OUT[v], targets, " ")
    for (i = 1; i <= n; i++) {
        w = targets[i]
        if (!(w in INDEX)) {
            connect(w)
            if (LOW[w] < LOW[v]) LOW[v] = LOW[w]
        } else if ((w in ON) && INDEX[w] < LOW[v]) LOW[v] = INDEX[w]
    }
    if (LOW[v] == INDEX[v]) {
        ncomp++
        do {
            w = STACK[sp--]
            delete ON[w]
            COMP[w] = ncomp
            SIZE[ncomp]++
        } while (w != v)
    }
}
# A shortest cycle through s inside its component (breadth first), as "s ... s".
function cycle_through(s,    head, tail, queue, prev, v, n, i, w, targets, path) {
    head = tail = 1
    queue[1] = s
    split("", prev)
    while (head <= tail) {
        v = queue[head++]
        n = split(OUT[v], targets, " ")
        for (i = 1; i <= n; i++) {
            w = targets[i]
            if (COMP[w] != COMP[s]) continue
            if (w == s) {
                path = s
                for (; v != s; v = prev[v]) path = v " " path
                return s " " path
            }
            if (!(w in prev)) { prev[w] = v; queue[++tail] = w }
        }
    }
    return s
}
BEGIN {
    LAYER["sdw"] = 0; LAYER["core"] = 1; LAYER["io"] = 2; LAYER["nn"] = 3
    LAYER["text"] = 4; LAYER["sampling"] = 4; LAYER["models"] = 5; LAYER["engine"] = 6
    LAYER["server"] = 7; LAYER["cli"] = 7; LAYER["pool"] = 7
    NAMES[0] = "public (include/sdw)"; NAMES[1] = "core"; NAMES[2] = "io"; NAMES[3] = "nn"
    NAMES[4] = "text, sampling"; NAMES[5] = "models"; NAMES[6] = "engine"
    NAMES[7] = "server, cli, pool"
    for (i = 1; i < ARGC; i++) {
        FILES[i] = ARGV[i]
        KNOWN[ARGV[i]] = 1
        PATH_MODULE[path_module(ARGV[i])] = 1
    }
    nfiles = ARGC - 1
}
FNR == 1 {
    in_comment = 0
    pending = ""
    is_c = FILENAME ~ /\.(c|cc)$/
    public = FILENAME ~ /^include\//
}
{
    if (!in_comment && $0 ~ /^[ \t]*#[ \t]*include[ \t]*"/) {
        target = $0
        sub(/^[ \t]*#[ \t]*include[ \t]*"/, "", target)
        sub(/".*/, "", target)
        INC[++ninc] = FILENAME SUBSEP FNR SUBSEP target
    }
    line = strip($0)
    if (!is_c) {
        if (FNR == 1) REG[FILENAME] = 0
        if (line ~ /^[ \t]*extern[ \t]+const[ \t]/ && REG[FILENAME] >= 0) REG[FILENAME] = 1
        else if (line !~ /^[ \t]*(#.*)?$/) REG[FILENAME] = -1
        if (public) calls(FILENAME, line, FNR, 1) # the contract everyone may call
        else if (FILENAME ~ /\.h$/) calls(FILENAME, line, FNR, 2)
        next
    }
    if (line !~ /^[ \t]*#/) definitions(FILENAME, line, FNR)
    calls(FILENAME, line, FNR, 0)
}
END {
    # .c files without a header of their own that implement another module split over files
    for (i = 1; i <= nfiles; i++) {
        f = FILES[i]
        if (f !~ /\.(c|cc)$/) continue
        h = f
        sub(/\.(c|cc)$/, ".h", h)
        if (h in KNOWN) continue
        n = split(DEFS[f], names, " ")
        home = ""
        for (j = 1; j <= n; j++) {
            if (!(names[j] in DECL) || DECL[names[j]] ~ /^include\//) continue
            hh = DECL[names[j]]
            c = hh
            sub(/\.h$/, ".c", c)
            if (!(c in KNOWN) || (home != "" && home != hh)) { home = "-"; break }
            home = hh
        }
        if (home != "" && home != "-") JOIN[f] = path_module(home)
    }
    for (i = 1; i <= nfiles; i++) {
        m = module_of(FILES[i])
        if (!(m in MOD)) { MOD[m] = ++nmod; ORDER[nmod] = m }
        if (FILES[i] in JOIN) MEMBERS[m] = MEMBERS[m] " " FILES[i]
    }
    for (i = 1; i <= ninc; i++) {
        split(INC[i], p, SUBSEP)
        target = p[3]
        if (("src/" target) in KNOWN) path = "src/" target
        else if (("include/" target) in KNOWN) path = "include/" target
        else continue # a system or generated header (the web page)
        if (REG[path] == 1) continue # a registration header
        depend(module_of(p[1]), module_of(path), "include", p[1] ":" p[2] ": includes \"" target "\"")
    }
    for (i = 1; i <= nfiles; i++) {
        f = FILES[i]
        for (key in CALL) {
            split(key, p, SUBSEP)
            if (p[1] != f) continue
            name = p[2]
            if (!(name in DEF) || DEF[name] == f || (DECL[name] ~ /^include\//)) continue
            a = module_of(f); b = module_of(DEF[name])
            if (a == b) continue
            w = f ":" CALL[key] ": calls " name " (" DEF[name] ":" DEF_LN[name] ")"
            # the first call in file order, so that the report is stable
            if ((a, b) in EDGE) {
                if (EDGE[a, b] != "calls") continue
                split(WHERE[a, b], q, ":")
                if (q[1] != f || q[2] + 0 <= CALL[key] + 0) continue
                WHERE[a, b] = w
                continue
            }
            depend(a, b, "calls", w)
        }
    }

    print "module graph of src/ by layer, lowest first (A: B C = A depends on B and C; \"(calls)\""
    print "= A calls a function of B without including a header of B)"
    for (l = 0; l <= 7; l++) {
        print ""
        print "layer " l ": " NAMES[l]
        for (i = 1; i <= nmod; i++) {
            m = ORDER[i]
            if (layer_of(m) != l) continue
            deps = ""
            for (j = 1; j <= nmod; j++) {
                t = ORDER[j]
                if (!((m, t) in EDGE)) continue
                deps = deps " " t (EDGE[m, t] == "calls" ? " (calls)" : "")
            }
            print "  " m (m in MEMBERS ? " [with" MEMBERS[m] "]" : "") ":" deps
        }
    }
    bad = 0
    for (i = 1; i <= nmod; i++)
        if (layer_of(ORDER[i]) < 0) {
            print "layer_graph: " ORDER[i] " is in no known layer (add its folder to LAYER)" > "/dev/stderr"
            bad = 1
        }

    print ""
    print "dependencies running up a layer:"
    n_up = 0
    for (i = 1; i <= nmod; i++)
        for (j = 1; j <= nmod; j++) {
            a = ORDER[i]; b = ORDER[j]
            if (!((a, b) in EDGE) || layer_of(b) <= layer_of(a)) continue
            print "  " a " (" NAMES[layer_of(a)] ") -> " b " (" NAMES[layer_of(b)] "): " WHERE[a, b]
            n_up++
        }
    if (!n_up) print "  none"

    print ""
    print "module cycles:"
    for (i = 1; i <= nmod; i++)
        if (!(ORDER[i] in INDEX)) connect(ORDER[i])
    n_cyc = 0
    for (i = 1; i <= nmod; i++) {
        m = ORDER[i]
        if (SIZE[COMP[m]] < 2 || (COMP[m] in SHOWN)) continue
        SHOWN[COMP[m]] = 1
        n_cyc++
        n = split(cycle_through(m), cyc, " ")
        members = ""
        for (j = 1; j <= nmod; j++) if (COMP[ORDER[j]] == COMP[m]) members = members " " ORDER[j]
        print "  " SIZE[COMP[m]] " modules:" members
        for (j = 1; j < n; j++) print "    " cyc[j] " -> " cyc[j + 1] ": " WHERE[cyc[j], cyc[j + 1]]
    }
    if (!n_cyc) print "  none"
    print ""
    print nmod " modules; " n_up " dependencies up a layer; " n_cyc " cycles"
    exit (n_up || n_cyc || bad) ? 1 : 0
}
' $files
