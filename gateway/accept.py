"""Just enough Accept-header parsing to choose between HTML, JSON and plain responses."""


def accepted_types(header: str) -> dict[str, float]:
    """Map each media type in an Accept header to its quality; malformed parts are skipped."""
    types: dict[str, float] = {}
    for part in header.split(","):
        media_type, *parameters = part.split(";")
        media_type = media_type.strip().lower()
        if not media_type:
            continue

        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        types[media_type] = max(quality, types.get(media_type, 0.0))
    return types


def accepts(header: str, media_type: str) -> bool:
    """True when the client lists `media_type` itself (not only */*) with a quality above 0."""
    return accepted_types(header).get(media_type, 0.0) > 0
