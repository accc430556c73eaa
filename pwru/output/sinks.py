"""The sinks a run's options ask for, besides the line output (see printer.Sink).

One place decides them, so the live session and a saved trace read back get the
same ones.
"""

from __future__ import annotations

from pwru.options import Options
from pwru.output.printer import Printer, Sink
from pwru.output.render import NameResolver
from pwru.output.savedtrace import header_line


def make_sinks(options: Options, printer: Printer, names: NameResolver) -> list[Sink]:
    """Sinks for ``options``; ``printer`` is where a sink's own lines go."""
    sinks: list[Sink] = []
    if options.output_pcap:
        from pwru.output.pcapng import PcapngSink

        renderer = printer.renderer
        header = header_line(options, renderer.wall_offset_ns, renderer.metadata_fields)
        sinks.append(PcapngSink.open(options, names, header, renderer.wall_offset_ns))
    return sinks
