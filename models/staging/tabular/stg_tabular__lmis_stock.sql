{#- One row per source, facility, month and item: a report re-sent in another file replaces the
    earlier one (the most recently landed valid row wins; within one file, the later row). -#}
with source as (

    select
        *,
        row_number() over (
            partition by source_name, facility_code, period, item_code
            order by landed_at desc, source_file desc, cast(source_row as integer) desc
        ) as recency_rank
    from {{ source('tabular', 'lmis_stock') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids and codes
        facility_code as org_unit_code,
        period as period_id,
        item_code,
        source_name,
        source_file,
        cast(source_row as integer) as source_row,
        batch_id,

        -- descriptors
        facility_name,
        item_name,
        unit,

        -- numerics (validated as whole numbers before landing in staging)
        cast({{ hp_try_cast_double('opening_balance') }} as bigint) as opening_balance,
        cast({{ hp_try_cast_double('quantity_received') }} as bigint) as quantity_received,
        cast({{ hp_try_cast_double('quantity_consumed') }} as bigint) as quantity_consumed,
        cast({{ hp_try_cast_double('losses') }} as bigint) as losses,
        cast({{ hp_try_cast_double('adjustments') }} as bigint) as adjustments,
        cast({{ hp_try_cast_double('stock_on_hand') }} as bigint) as stock_on_hand,
        cast({{ hp_try_cast_double('stockout_days') }} as bigint) as stockout_days,
        comment,

        -- timestamps
        landed_at

    from source
    where recency_rank = 1

)

select * from renamed
