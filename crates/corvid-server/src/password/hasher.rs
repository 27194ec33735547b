//! One argon2id hasher that keeps its memory block between passwords.
//!
//! argon2id with OWASP's recommended parameters (19 MiB, 2 passes, 1 lane) fills 19 MiB
//! for every password. Allocating that afresh for each one left the memory with the
//! allocator of whichever thread ran it, and with one blocking thread per concurrent
//! attempt a flood of logins grew the server by gigabytes that were never given back
//! (docs/benchmarks.md, `login-flood`). A [`Hasher`] allocates its block once and reuses
//! it, so the memory spent on passwords is the number of hashers times 19 MiB.

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2: {0}")]
    Argon2(#[from] argon2::Error),
    #[error("PHC string: {0}")]
    Encoding(#[from] argon2::password_hash::Error),
}

/// Bytes of random salt per password (the argon2 crate's recommendation).
const SALT_BYTES: usize = argon2::RECOMMENDED_SALT_LEN;
/// The longest hash output a PHC string can carry.
const MAX_OUTPUT_BYTES: usize = Output::MAX_LENGTH;

/// An argon2id hasher with its own reusable memory block.
#[derive(Default)]
pub struct Hasher {
    memory: Vec<Block>,
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }

    /// An argon2id PHC string for `password` with a fresh random salt, made with OWASP's
    /// recommended parameters. CPU-heavy: call it from a thread of the hashing pool.
    pub fn hash(&mut self, password: &str) -> Result<String, HashError> {
        let params = Params::DEFAULT;
        let mut salt = [0u8; SALT_BYTES];
        corvid_store::replay::fill_random(&mut salt);
        let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into_with_memory(
                password.as_bytes(),
                &salt,
                &mut output,
                self.memory(params.block_count()),
            )?;
        let salt = SaltString::encode_b64(&salt)?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params)?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&output)?),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches the PHC string `phc`, with the parameters `phc` names.
    /// A malformed hash never matches. The comparison takes constant time.
    pub fn verify(&mut self, password: &str, phc: &str) -> bool {
        self.try_verify(password, phc).unwrap_or(false)
    }

    fn try_verify(&mut self, password: &str, phc: &str) -> Result<bool, HashError> {
        let parsed = PasswordHash::new(phc)?;
        let algorithm = Algorithm::try_from(parsed.algorithm)?;
        let version = match parsed.version {
            Some(version) => Version::try_from(version)?,
            None => Version::default(),
        };
        // The output length comes from the stored hash, as argon2's own verifier does.
        let params = Params::try_from(&parsed)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let mut salt_bytes = [0u8; argon2::password_hash::Salt::MAX_LENGTH];
        let salt = salt.decode_b64(&mut salt_bytes)?;
        let mut output = [0u8; MAX_OUTPUT_BYTES];
        let output = &mut output[..expected.len()];
        Argon2::new(algorithm, version, params.clone()).hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            output,
            self.memory(params.block_count()),
        )?;
        // `Output`'s equality is constant-time.
        Ok(Output::new(output)? == expected)
    }

    /// The first `blocks` blocks of this hasher's memory, grown (once) if it is smaller.
    fn memory(&mut self, blocks: usize) -> &mut [Block] {
        if self.memory.len() < blocks {
            self.memory.resize(blocks, Block::default());
        }
        &mut self.memory[..blocks]
    }

    /// Where this hasher's memory block starts: the same address from one password to
    /// the next shows that the block is reused.
    #[cfg(test)]
    pub fn memory_address(&self) -> usize {
        self.memory.as_ptr() as usize
    }
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn hashes_verify_only_their_password_and_never_contain_it() {
        let mut hasher = Hasher::new();
        let phc = hasher.hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(hasher.verify("correct horse", &phc));
        assert!(!hasher.verify("wrong horse", &phc));
        assert!(!hasher.verify("correct horse", "not a hash"));
        assert!(!hasher.verify("correct horse", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA"));
        assert_ne!(phc, hasher.hash("correct horse").unwrap(), "salts differ");
    }

    #[test]
    fn hashes_are_those_of_the_argon2_crate_both_ways() {
        // Accounts created before the hasher kept its memory must still log in, and the
        // stored format must stay what any argon2 implementation reads.
        let mut hasher = Hasher::new();
        let ours = hasher.hash("correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"wrong horse", &parsed)
            .is_err());
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let theirs = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(hasher.verify("correct horse", &theirs));
        assert!(!hasher.verify("wrong horse", &theirs));
    }

    #[test]
    fn the_memory_block_is_allocated_once_and_reused() {
        let mut hasher = Hasher::new();
        let phc = hasher.hash("correct horse").unwrap();
        let block = hasher.memory_address();
        for _ in 0..3 {
            assert!(!hasher.verify("wrong horse", &phc));
            assert_eq!(hasher.memory_address(), block);
        }
        assert!(
            hasher.verify("correct horse", &phc),
            "reused memory still hashes right"
        );
        assert_eq!(hasher.memory_address(), block);
    }
}
