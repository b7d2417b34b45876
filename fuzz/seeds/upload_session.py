#!/usr/bin/env python3
"""Writes the seeds of the `upload_session` fuzz target to
fuzz/seeds/upload_session/.

The target's input is decoded by `arbitrary` (1.x) from its `Input` type in
fuzz_targets/upload_session.rs; this script encodes such inputs the way
`arbitrary` decodes them: integers little-endian, `bool` one byte (bit 0),
`Option` a bool then the value, `Vec` a bool before each element and a
false one at its end, an enum variant a u32 `v` with `(v * count) >> 32 ==
index`, fields in declaration order. Keep the enums below in the order of
the Rust ones; after changing those types, update this script and re-run it
(the old seeds still decode, but to other inputs).

    python3 fuzz/seeds/upload_session.py

Each seed is one scenario; `FERRY_FUZZ_VERBOSE=1` on a run of the target
prints what its sessions did (puts saved, resumed, cut...).
"""

import os
import struct

UPLOAD_CHUNK = 256 * 1024


def u8(v):
    return struct.pack("<B", v)


def u16(v):
    return struct.pack("<H", v)


def u64(v):
    return struct.pack("<Q", v)


def i64(v):
    return struct.pack("<q", v)


def boolean(b):
    return u8(1 if b else 0)


def option(x):
    return b"\x00" if x is None else b"\x01" + x


def vec(items):
    return b"".join(b"\x01" + i for i in items) + b"\x00"


def variant(index, count):
    v = -(-(index << 32) // count)  # ceil(index * 2^32 / count)
    assert (v * count) >> 32 == index
    return struct.pack("<I", v)


def enum(names):
    """Encoder of a Rust enum with these variants, in order."""

    def encode(name, *fields):
        return variant(names.index(name), len(names)) + b"".join(fields)

    return encode


Magic = enum(["Good", "Corrupt", "Truncated"])
Hello = enum(["Upload", "UploadWithToken", "NoUpload", "Raw", "Missing"])
Item = enum(
    ["Put", "Again", "Get", "Stat", "List", "Message", "PutEnd", "RawFrame", "Garbage"]
)
Body = enum(["Bytes", "Fill", "OverChunk"])
Size = enum(["Exact", "More", "Less", "Zero", "OverInline", "Any"])
Mtime = enum(["Some", "Zero", "Negative", "Any"])
Skip = enum(["None", "Chunk", "OnDisk", "Bytes"])
End = enum(["Right", "Damaged", "Zero", "Any", "Missing"])
PathSpec = enum(["Simple", "Parts", "Raw", "ExistingTemp"])
Part = enum(
    [
        "A",
        "B",
        "Txt",
        "Hidden",
        "TempLike",
        "DotDot",
        "Dot",
        "Empty",
        "Backslash",
        "Nul",
        "Control",
        "Long",
        "Text",
    ]
)

# Indexes into SIMPLE_PATHS of the target.
SIMPLE = ["a", "b", "f.txt", "a/b", "a/f.txt", "a/b/f.txt", "b/a", ".h", "a/.h", ".h/f.txt"]


def simple(path):
    return PathSpec("Simple", u8(SIMPLE.index(path)))


def parts(*ps, slashes=0):
    return PathSpec("Parts", u8(slashes), vec(list(ps)))


ROOT = parts()


def raw_path(b):
    return PathSpec("Raw", vec([u8(x) for x in b]))


def byte_vec(b):
    return vec([u8(x) for x in b])


def put(path, body, inline=True, size=None, mtime=None, skip=None, end=None):
    return Item(
        "Put",
        path,
        boolean(inline),
        body,
        size or Size("Exact"),
        mtime or Mtime("Some"),
        skip or Skip("None"),
        end or End("Right"),
    )


def again(which, inline=False, skip=None, end=None):
    return Item("Again", u8(which), boolean(inline), skip or Skip("None"), end or End("Right"))


def get(path, offset=0, length=None):
    return Item("Get", path, u8(offset), option(None if length is None else u8(length)))


def stat(path):
    return Item("Stat", path)


def list_(path):
    return Item("List", path)


def text(s):
    return Body("Bytes", byte_vec(s))


def fill(n, seed):
    return Body("Fill", u16(n), u8(seed))


def over_chunk(extra, seed):
    return Body("OverChunk", u16(extra), u8(seed))


def session(items, hello=None, magic=None, cut=None):
    return (
        (magic or Magic("Good"))
        + (hello or Hello("Upload"))
        + vec(items)
        + option(None if cut is None else u16(cut))
    )


def inp(sessions, hidden=False, overwrite=False, max_size=None):
    # `sessions` is the last field: decoded with `arbitrary_take_rest`,
    # the same bool-per-element form.
    return (
        boolean(hidden)
        + boolean(overwrite)
        + option(None if max_size is None else u16(max_size))
        + vec(sessions)
    )


SEEDS = {
    # Inline Put with the right hash, then read back.
    "inline-put": inp(
        [session([put(simple("a"), text(b"hello")), get(simple("a")), stat(simple("a")), list_(ROOT)])]
    ),
    # A damaged hash: Mismatch, nothing saved.
    "inline-put-bad-hash": inp(
        [session([put(simple("f.txt"), text(b"data"), end=End("Damaged", u8(3), u8(0x40))), list_(ROOT)])]
    ),
    # PutReady form, nested target.
    "put-ready": inp([session([put(simple("a/b/f.txt"), fill(3000, 9), inline=False), get(simple("a/b/f.txt"), 5, 20)])]),
    # Pipelined inline puts into nested directories, one over a directory.
    "pipelined": inp(
        [
            session(
                [
                    put(simple("a/f.txt"), text(b"one")),
                    put(simple("b/a"), text(b"two")),
                    put(simple("a"), text(b"dir in the way")),
                    put(simple("f.txt"), fill(100, 1)),
                    list_(parts(Part("A"))),
                ]
            )
        ]
    ),
    # A session ends after the body, before PutEnd: the temporary keeps
    # the whole body; the next session resumes from it (PutReady offset =
    # its size) and sends only the PutEnd.
    "resume-after-body": inp(
        [
            session([put(simple("f.txt"), fill(3000, 7), inline=False, end=End("Missing"))]),
            session([list_(ROOT), get(PathSpec("ExistingTemp", u8(0))), again(0, skip=Skip("OnDisk", u8(0)))]),
            session([get(simple("f.txt"))]),
        ]
    ),
    # A body just over one chunk cut after the first chunk: the temporary
    # holds one chunk; the next session resumes from it.
    "resume-over-chunk": inp(
        [
            session([put(simple("a/f.txt"), over_chunk(8000, 3), inline=False)], cut=4000),
            session([again(0, skip=Skip("Chunk"))]),
        ]
    ),
    # Overwrite on: the second upload replaces the first.
    "overwrite": inp(
        [session([put(simple("b"), text(b"first")), put(simple("b"), text(b"second!")), get(simple("b"))])],
        overwrite=True,
    ),
    # Overwrite off: Exists.
    "no-overwrite": inp([session([put(simple("b"), text(b"first")), put(simple("b"), text(b"second!"))])]),
    # Hostile targets, all refused.
    "hostile-paths": inp(
        [
            session(
                [
                    put(parts(Part("DotDot"), Part("A")), text(b"x")),
                    put(parts(Part("Backslash")), text(b"x")),
                    put(parts(Part("A"), slashes=1), text(b"x")),
                    put(parts(Part("TempLike", b"\x01" * 16)), text(b"x")),
                    put(simple(".h"), text(b"x")),
                    put(raw_path(b"a/../../sentinel/keep.txt"), text(b"x")),
                    list_(ROOT),
                    # Refused before its body, which the server then reads
                    # as frames (a client waits for PutReady): last.
                    put(parts(Part("Nul")), text(b"x"), inline=False),
                ]
            )
        ]
    ),
    # Hidden names shared: a hidden target is accepted, temporaries still
    # never shown.
    "hidden-shared": inp(
        [
            session([put(simple(".h/f.txt"), text(b"h"), inline=False, end=End("Missing"))]),
            session([put(simple("a/.h"), text(b"dot")), list_(ROOT), list_(simple(".h")), list_(simple("a"))]),
        ],
        hidden=True,
    ),
    # Declared size wrong both ways: the stream falls out of step.
    "wrong-sizes": inp(
        [
            session([put(simple("a"), text(b"abcdef"), size=Size("More", u8(2))), list_(ROOT)]),
            session([put(simple("b"), text(b"abcdef"), size=Size("Less", u8(1))), list_(ROOT)]),
        ]
    ),
    # Over the upload limit, inline and not.
    "limits": inp(
        [session([put(simple("a"), text(b"12345")), put(simple("b"), text(b""), inline=False, size=Size("Any", u64(1 << 50)))])],
        max_size=4,
    ),
    # A declared size beyond the free space: NoSpace (and ferry's empty
    # temporary left behind, see the target's `no_space_refusal`).
    "no-space": inp([session([put(simple("a/f.txt"), text(b""), inline=False, size=Size("Any", u64(1 << 50)), end=End("Missing")), list_(simple("a"))])]),
    # Truncated in the middle of an inline body, then looked at.
    "cut-inline": inp(
        [
            session([put(simple("a/f.txt"), fill(500, 5))], cut=100),
            session([list_(simple("a")), stat(PathSpec("ExistingTemp", u8(0)))]),
        ]
    ),
}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "upload_session")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {out}")


if __name__ == "__main__":
    main()
