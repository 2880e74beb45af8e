//! With the `sqlx` feature: [`ContentHash`], [`PeerId`] and [`FileName`] bind
//! and read as text columns on every sqlx database, so the tracker stores
//! them as their wire form and gets them back parsed. A stored value that
//! does not parse is a decode error, never a panic.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::{ContentHash, FileName, PeerId};

/// Implements `Type`, `Encode` (its text) and `Decode` (parsed from text).
macro_rules! text_column {
    ($t:ty) => {
        impl<DB: Database> Type<DB> for $t
        where
            String: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $t
        where
            String: Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <String as Encode<'q, DB>>::encode(self.to_string(), buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $t
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&'r str as Decode<'r, DB>>::decode(value)?;
                Ok(<$t>::try_from(text)?)
            }
        }
    };
}

text_column!(ContentHash);
text_column!(PeerId);
text_column!(FileName);
