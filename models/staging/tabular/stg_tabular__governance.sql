{#- One row per source, facility and quarter; the most recently landed valid row wins. -#}
with source as (

    select
        *,
        row_number() over (
            partition by source_name, facility_code, period
            order by landed_at desc, source_file desc, cast(source_row as integer) desc
        ) as recency_rank
    from {{ source('tabular', 'governance') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids and codes
        facility_code as org_unit_code,
        period as period_id,
        source_name,
        source_file,
        cast(source_row as integer) as source_row,
        batch_id,

        -- descriptors
        facility_name,
        currency,

        -- numerics (meetings; budget in whole units of currency)
        cast({{ hp_try_cast_double('hmc_meetings_planned') }} as bigint) as hmc_meetings_planned,
        cast({{ hp_try_cast_double('hmc_meetings_held') }} as bigint) as hmc_meetings_held,
        cast({{ hp_try_cast_double('budget_allocated') }} as bigint) as budget_allocated,
        cast({{ hp_try_cast_double('budget_spent') }} as bigint) as budget_spent,

        -- flags (yes/no or true/false, validated before staging)
        lower(trim(service_charter_displayed)) in ('yes', 'true') as is_service_charter_displayed,
        comment,

        -- timestamps
        landed_at

    from source
    where recency_rank = 1

)

select * from renamed
