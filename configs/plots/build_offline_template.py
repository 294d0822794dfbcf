"""Build configs/plots/offline.html: DVC's plots page with vega, vega-lite and vega-embed inlined, so
`dvc plots show` writes HTML that loads nothing from the network (DVC's default page loads them from a CDN).

    npm install --prefix /tmp/vega vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0
    python configs/plots/build_offline_template.py /tmp/vega/node_modules

.dvc/config points DVC at the result (`plots.html_template`). The template has no `{scripts}` placeholder, so
DVC adds no CDN <script> tags; `{plot_divs}` is where DVC puts the plots.
"""

import sys
from pathlib import Path

LIBRARIES = ("vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js")


def main(node_modules: str) -> None:
    root = Path(node_modules)
    scripts = "\n".join(f'<script type="text/javascript">\n{(root / lib).read_text()}\n</script>' for lib in LIBRARIES)
    page = (
        "<!DOCTYPE html>\n<html>\n<head>\n{refresh_tag}\n<title>DVC Plot</title>\n"
        + scripts
        + "\n<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n"
    )
    (Path(__file__).parent / "offline.html").write_text(page)


if __name__ == "__main__":
    main(sys.argv[1])
