"""The sinks a run's options ask for, besides the line output (see printer.Sink).

One place decides them, so the live session and a saved trace read back get the
same ones. --summary and --output-per-packet share one packet tracker
(pwru.diagnose.story), which hands each finished packet to the per-packet view
and to the drop summary, in that order (the summary's report comes last).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pwru.options import Options
from pwru.output.printer import Printer, Sink
from pwru.output.render import NameResolver
from pwru.output.savedtrace import header_line
from pwru.trace.probes import Probe, ProbeKind

if TYPE_CHECKING:
    from pwru.diagnose.story import PacketListener

log = logging.getLogger("pwru")

FREE = "kfree_skbmem"


def make_sinks(
    options: Options, printer: Printer, names: NameResolver, probes: Iterable[Probe] = ()
) -> list[Sink]:
    """Sinks for ``options``; ``printer`` is where a sink's own lines go; ``probes``:
    what the run traces (whether skb frees are seen decides where a packet ends)."""
    sinks: list[Sink] = []
    if options.output_pcap:
        from pwru.output.pcapng import PcapngSink

        renderer = printer.renderer
        header = header_line(options, renderer.wall_offset_ns, renderer.metadata_fields)
        sinks.append(PcapngSink.open(options, names, header, renderer.wall_offset_ns))
    if not (options.summary or options.output_per_packet):
        return sinks
    # the packet views are imported only when asked for: most runs print lines
    from pwru.diagnose.netfilter import FirewallWatch
    from pwru.diagnose.places import Namespaces
    from pwru.diagnose.story import PacketTracker
    from pwru.diagnose.storyview import PacketView
    from pwru.diagnose.summary import DropSummary
    from pwru.kernel.netns import resolve_netns

    namespaces = Namespaces()
    listeners: list[PacketListener] = []
    if options.output_per_packet:
        view = PacketView(printer, printer.renderer, namespaces, json_output=options.output_json)
        listeners.append(view)
    if options.summary:
        firewall = FirewallWatch(namespaces, resolve_netns(options.filter_netns))
        log.debug(
            "firewall rules of %d namespaces read in %.3f s (%s)",
            len(firewall.before),
            firewall.start_seconds,
            ", ".join(firewall.tools.values()) or "no iptables-save, ip6tables-save or nft",
        )
        summary = DropSummary(
            printer,
            names,
            json_output=options.output_json,
            namespaces=namespaces,
            firewall=firewall,
            track_clones=options.filter_track_skb,
        )
        listeners.append(summary)
    kprobes = (ProbeKind.KPROBE, ProbeKind.KPROBE_MULTI)
    free_traced = any(p.name == FREE and p.kind in kprobes for p in probes)
    sinks.append(PacketTracker(names, listeners, free_traced=free_traced))
    return sinks
