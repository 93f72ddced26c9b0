"""Captures of KXP traffic: a pcap writer for ``--pcap`` and an offline decryptor.

``pcap`` writes what crossed a connection with synthesised Ethernet/IP/TCP headers;
``streams`` reads pcap/pcapng and reassembles TCP; ``mqtt`` finds PSKs published on
the out-of-band channel; ``decrypt`` finds KXP sessions and decrypts their records.
"""
