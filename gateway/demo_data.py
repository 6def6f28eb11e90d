"""The demo's users and files, with real bytes made on the fly or shipped in demo_assets/."""

import struct
import zlib
from dataclasses import dataclass
from importlib import resources

USERS = ("alice", "bob")


@dataclass(frozen=True)
class DemoObject:
    key: str
    owner_id: str
    visibility: str
    content_type: str
    filename: str
    body: bytes
    shared_with: tuple[str, ...]
    description: str


def demo_objects() -> list[DemoObject]:
    return [
        DemoObject(
            key="videos/alice/intro.mp4",
            owner_id="alice",
            visibility="private",
            content_type="video/mp4",
            filename="intro.mp4",
            body=resources.files("gateway").joinpath("demo_assets/intro.mp4").read_bytes(),
            shared_with=(),
            description="private video, alice only",
        ),
        DemoObject(
            key="images/logo.png",
            owner_id="alice",
            visibility="public",
            content_type="image/png",
            filename="logo.png",
            body=png(64, 64),
            shared_with=(),
            description="public image, anyone",
        ),
        DemoObject(
            key="docs/alice/report.pdf",
            owner_id="alice",
            visibility="private",
            content_type="application/pdf",
            filename="Quarterly report – Q4.pdf",
            body=pdf("Quarterly report, shared by alice with bob"),
            shared_with=("bob",),
            description="document, alice's, shared with bob",
        ),
    ]


def png(width: int, height: int) -> bytes:
    """Encode an RGB gradient as a PNG (signature, IHDR, IDAT, IEND)."""
    rows = b"".join(
        b"\x00" + bytes(channel for x in range(width) for channel in (x * 4 % 256, y * 4 % 256, 160))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pdf(text: str) -> bytes:
    """Write a one-page PDF 1.4 that shows `text`, with a correct cross-reference table."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 18 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]

    document = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(document))
        document += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"

    xref_offset = len(document)
    document += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    document += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    document += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref_offset}\n%%EOF\n".encode()
    return document
