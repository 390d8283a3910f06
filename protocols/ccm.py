# AES-CCM (RFC 3610 / NIST SP 800-38C) with a 13-byte nonce (L = 2), no associated data and a
# 4-byte MIC: exactly what BTHome v2 encryption uses. Built on an AES-ECB object with
# `.encrypt(block16) -> 16 bytes` (MicroPython `cryptolib.aes(key, 1)` on the ESP32, or the
# board layer's stand-in), because ESP32 MicroPython has ECB but neither CCM nor CTR.
# CCM only ever runs the forward cipher, for the CBC-MAC and for the keystream, so one
# encrypt-only ECB object serves both encryption and decryption.
# The hub decrypts with `cryptography`'s AESCCM (much faster); tests pin the two together.

NONCE_LEN = 13
MIC_LEN = 4
_B0_FLAGS = 0x09  # 8 * ((M - 2) // 2) + (L - 1) with M = 4, L = 2
_A_FLAGS = 0x01  # L - 1


class CCMError(ValueError):
    """Bad nonce or message length, or a MIC that does not verify."""


def _check(nonce, n):
    if len(nonce) != NONCE_LEN:
        raise CCMError("nonce must be 13 bytes")
    if n > 0xFFFF:
        raise CCMError("message too long for L = 2")


def _mac(aes, nonce, pt):
    n = len(pt)
    x = aes.encrypt(bytes((_B0_FLAGS,)) + nonce + bytes((n >> 8, n & 0xFF)))
    blk = bytearray(16)
    for off in range(0, n, 16):
        for i in range(16):
            j = off + i
            blk[i] = x[i] ^ (pt[j] if j < n else 0)
        x = aes.encrypt(bytes(blk))
    return x


def _ctr(aes, nonce, data):
    # XOR data with the keystream S1, S2, ... (S0 is reserved for the MIC).
    n = len(data)
    out = bytearray(n)
    for off in range(0, n, 16):
        i = off // 16 + 1
        s = aes.encrypt(bytes((_A_FLAGS,)) + nonce + bytes((i >> 8, i & 0xFF)))
        for k in range(min(16, n - off)):
            out[off + k] = data[off + k] ^ s[k]
    return bytes(out)


def _s0(aes, nonce):
    return aes.encrypt(bytes((_A_FLAGS,)) + nonce + b"\x00\x00")


def encrypt(aes, nonce, plaintext):
    """Returns (ciphertext, mic); the ciphertext is as long as the plaintext."""
    _check(nonce, len(plaintext))
    t = _mac(aes, nonce, plaintext)
    s0 = _s0(aes, nonce)
    mic = bytes((t[0] ^ s0[0], t[1] ^ s0[1], t[2] ^ s0[2], t[3] ^ s0[3]))
    return _ctr(aes, nonce, plaintext), mic


def decrypt(aes, nonce, ciphertext, mic):
    """Returns the plaintext, or raises CCMError when the MIC does not verify."""
    _check(nonce, len(ciphertext))
    if len(mic) != MIC_LEN:
        raise CCMError("MIC must be 4 bytes")
    pt = _ctr(aes, nonce, ciphertext)
    t = _mac(aes, nonce, pt)
    s0 = _s0(aes, nonce)
    diff = 0
    for i in range(MIC_LEN):  # no early exit: the comparison takes the same time either way
        diff |= t[i] ^ s0[i] ^ mic[i]
    if diff:
        raise CCMError("MIC does not verify")
    return pt
